"""Grouping files into task runs: pure functions."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.settle import AUDIO_PER_TASK_S, FEW_FILES, FILES_PER_TASK, batch_label, batches


@dataclass(frozen=True)
class File:
    label: str
    duration_s: float | None = 1.0


def files(count: int, duration_s: float | None = 1.0) -> list[File]:
    return [File(f"f{n:05d}", duration_s) for n in range(count)]


def test_a_small_run_gets_one_task_run_per_file() -> None:
    groups = batches(files(FEW_FILES))
    assert [len(g) for g in groups] == [1] * FEW_FILES


def test_a_large_run_gets_fat_task_runs_in_manifest_order() -> None:
    many = files(FEW_FILES * 3 + 7)
    groups = batches(many)
    assert max(len(g) for g in groups) == FILES_PER_TASK
    assert [f for g in groups for f in g] == many


def test_an_explicit_size_wins_and_long_audio_gets_a_task_run_of_its_own() -> None:
    mixed = [File("a", 60), File("long", AUDIO_PER_TASK_S), File("b", 60), File("c", None)]
    assert [[f.label for f in g] for g in batches(mixed, 10)] == [["a"], ["long"], ["b", "c"]]
    assert [len(g) for g in batches(files(7), 3)] == [3, 3, 1]


def test_labels_name_the_file_or_the_range() -> None:
    assert batch_label([File("only")]) == "only"
    assert batch_label(files(3)) == "f00000…f00002 (3 files)"
