"""The settle tasks: grouping files into task runs, and which errors the token task retries."""

from __future__ import annotations

from dataclasses import dataclass

from invox import RateLimitError
from invox_batch.settling import retry_delays
from tasks.settle import (
    AUDIO_PER_TASK_S,
    FEW_FILES,
    FILES_PER_TASK,
    _retry_unless_unreachable,
    batch_label,
    batches,
)


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


def test_retry_condition_retries_only_what_the_client_marked_retryable() -> None:
    from prefect.states import Failed

    class FirstRun:
        run_count = 1

    rate_limited = Failed(data=RateLimitError("x", status_code=429))
    assert _retry_unless_unreachable(None, FirstRun(), rate_limited)  # type: ignore[arg-type]
    assert not _retry_unless_unreachable(None, FirstRun(), Failed(data=ValueError("bug")))  # type: ignore[arg-type]
    assert retry_delays(5, 1.0, cap_s=5) == [1, 2, 4, 5, 5]
