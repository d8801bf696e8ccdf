"""What a settling task run's state says: its files' outcome, retries, or that the ledger had them.

A task run ends **Failed** when any of its files failed, its message naming those files with
their ``error_type`` (never a message text, which may quote the provider); files settled from
the ledger show as a Completed state named **Cached**. The flow run's own state is separate.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar, cast

from prefect import State, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed
from prefect.utilities.annotations import quote

from invox_batch.records import Outcome
from invox_batch.settling import Retried, Unit

__all__ = [
    "CACHED",
    "group_state",
    "ledger_groups",
    "outcomes_of",
    "retry_notes",
    "show_cached",
    "state_message",
    "unwrap",
]

T = TypeVar("T")
CACHED = "Cached"
LEDGER_TASKS_OPEN = 8
LEDGER_FILES_PER_TASK = 1000  # no API call behind them: a rerun stays about as fast as before


def _as_is(value: T) -> T:
    """A task parameter Prefect passes through without walking it (transcripts stay in memory)."""
    return cast(T, quote(value))


class Carried:
    """A task run's data, kept out of Prefect's log lines (its repr names no outcome)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<outcomes, not shown>"


def retry_notes(units: Sequence[Unit], retried: Mapping[Retried, int]) -> list[str]:
    """Per file: which steps were retried, how often and after which error_type."""
    steps: dict[str, list[str]] = defaultdict(list)
    for entry, times in sorted(retried.items(), key=lambda kv: (kv[0].step, kv[0].error_type)):
        steps[entry.identity].append(f"{entry.step} {times}x ({entry.error_type})")
    return [f"{u.label}: {', '.join(steps[u.identity])}" for u in units if u.identity in steps]


def state_message(
    units: Sequence[Unit], outcomes: Sequence[Outcome], retried: Mapping[Retried, int]
) -> str:
    """One line: the failed files with their error_type (or how many completed), then retries."""
    pairs = list(zip(units, outcomes, strict=True))
    failed = [f"{u.label} ({o.error_type})" for u, o in pairs if o.status == "failed"]
    cached = sum(1 for _, o in pairs if o.from_cache)
    if failed:
        line = f"{len(failed)} of {len(pairs)} files failed: {', '.join(failed)}"
    else:
        line = f"{len(pairs)} {'file' if len(pairs) == 1 else 'files'} completed"
    if cached:
        line += f"; {cached} settled from the ledger (no API call)"
    notes = retry_notes(units, retried)
    return line + (f"; retried: {'; '.join(notes)}" if notes else "")


def group_state(
    units: Sequence[Unit],
    outcomes: Sequence[Outcome],
    retried: Mapping[Retried, int],
    data: Any = None,
) -> State[Any]:
    """Failed if any file failed; Cached if every file came from the ledger; else Completed."""
    message = state_message(units, outcomes, retried)
    data = Carried(list(outcomes) if data is None else data)
    if any(o.status == "failed" for o in outcomes):
        return Failed(message=message, data=data)
    if outcomes and all(o.from_cache for o in outcomes):
        return Completed(name=CACHED, message=message, data=data)
    return Completed(message=message, data=data)


async def outcomes_of(state: State[Any]) -> Any:
    """The data a settling task run ended with, Failed or not; a crash of the task re-raised."""
    return unwrap(await state.aresult(raise_on_failure=False))


def unwrap(data: Any) -> Any:
    """What ``group_state`` carried; an exception (the task itself failed) raised."""
    if isinstance(data, BaseException):
        raise data
    return data.value if isinstance(data, Carried) else data


@task(
    name="from-ledger",
    task_run_name="ledger[{label}]",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def _from_ledger(label: str, units: list[Unit], outcomes: list[Outcome]) -> State[Any]:
    """Files an earlier run already paid for, shown as a task run of their own (no API call)."""
    return group_state(units, outcomes, {}, data=len(outcomes))


def ledger_groups(units: Sequence[Unit], one_each_up_to: int) -> list[list[Unit]]:
    """A task run per file in a small run, else up to ``LEDGER_FILES_PER_TASK`` files each."""
    size = 1 if len(units) <= one_each_up_to else LEDGER_FILES_PER_TASK
    return [list(units[n : n + size]) for n in range(0, len(units), size)]


async def show_cached(
    groups: Sequence[tuple[str, list[Unit]]], outcomes: Mapping[str, Outcome]
) -> None:
    """One ``from-ledger`` task run per labelled group of files settled from the ledger."""
    opened = asyncio.Semaphore(LEDGER_TASKS_OPEN)

    async def one(label: str, group: list[Unit]) -> None:
        async with opened:
            settled = [outcomes[u.identity] for u in group]
            called = _from_ledger(label, _as_is(group), _as_is(settled), return_state=True)
            await cast(Awaitable[State[Any]], called)

    await asyncio.gather(*(one(label, g) for label, g in groups))
