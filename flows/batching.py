"""Grouping files into task runs: a few fat task runs instead of three thin ones per file.

Prefect costs a few milliseconds and tens of kilobytes per task run, and the SQLite-backed
server stalls on bursts of them; small files are therefore settled many to a task run. Long
recordings get task runs of their own, so the UI still shows where the time goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

__all__ = ["AUDIO_PER_TASK_S", "FEW_FILES", "FILES_PER_TASK", "batch_label", "batches"]

FEW_FILES = 100  # up to this many files, one task run each: cheap, and easiest to follow
FILES_PER_TASK = 50
AUDIO_PER_TASK_S = 3600.0


class Sized(Protocol):
    """What batching needs of a file."""

    @property
    def label(self) -> str: ...

    @property
    def duration_s(self) -> float | None: ...


U = TypeVar("U", bound=Sized)


def batches(units: Sequence[U], files_per_task: int = 0) -> list[list[U]]:
    """Consecutive groups of at most ``files_per_task`` files (0 picks) and an hour of audio."""
    size = files_per_task or (1 if len(units) <= FEW_FILES else FILES_PER_TASK)
    groups: list[list[U]] = []
    audio = 0.0
    for unit in units:
        seconds = unit.duration_s or 0.0
        if not groups or len(groups[-1]) >= size or audio + seconds > AUDIO_PER_TASK_S:
            groups.append([])
            audio = 0.0
        groups[-1].append(unit)
        audio += seconds
    return groups


def batch_label(group: Sequence[U]) -> str:
    """The task run's name part: its file, or its first and last files and how many."""
    if len(group) == 1:
        return group[0].label
    return f"{group[0].label}…{group[-1].label} ({len(group)} files)"
