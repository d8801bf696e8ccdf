"""The Prefect tasks a run settles its files with, and the two executors built on them.

``settle-files`` settles a group of files on the flow's own event loop (one client, the run's
slots): Prefect costs milliseconds and kilobytes per task run and its SQLite server stalls on
bursts, so small files share task runs. The group is a label for the UI, not a gate: its files
take the run's slots in manifest order alongside every other group's. With ``task_runner="dask"`` each file is a ``settle`` task on a
Dask cluster instead, with its own client and the same ledger. Either way each file goes through
the library's ``settle_unit``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.utilities.annotations import quote

from invox import APIUnreachableError, InvoxClient, InvoxError, InvoxSettings
from invox_batch.budget import BudgetPlan
from invox_batch.errors import ErrorType
from invox_batch.ledger import Generation, Ledger, LedgerTarget
from invox_batch.parameters import Polling, Retrying, Spend
from invox_batch.records import Outcome
from invox_batch.settling import (
    AcrossRuns,
    Run,
    Unit,
    Work,
    counted_client,
    retry_delays,
    settle_unit,
)

from .outcomes import group_state, outcomes_of, unwrap

__all__ = [
    "FEW_FILES",
    "OnDask",
    "OnLoop",
    "authenticate",
    "authenticating",
    "batch_label",
    "batches",
]

T = TypeVar("T")
FEW_FILES = 100  # up to this many files, one task run each: cheap, and easiest to follow
FILES_PER_TASK = 50
AUDIO_PER_TASK_S = 3600.0


def _as_is(value: T) -> T:
    """A task parameter Prefect passes through without walking it (clients, runs, records)."""
    return cast(T, quote(value))


def _retry_unless_unreachable(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry what the client marked retryable, but a refused connection only once: an API that
    is down for the run must fail it in seconds, not after minutes of backoff."""
    error = state.data
    if isinstance(error, APIUnreachableError):
        return task_run.run_count < 2
    return isinstance(error, InvoxError) and error.retryable


@task(
    name="authenticate",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=6,
    retry_delay_seconds=retry_delays(6, 1.0),
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_unless_unreachable,
)
async def authenticate(client: InvoxClient) -> None:
    """Check the credential once before any upload, so a bad key fails the run, not every row."""
    try:
        await client.authenticate()
    except InvoxError as exc:
        if exc.retryable and exc.retry_after:
            await asyncio.sleep(min(exc.retry_after, 120.0))
        raise


def authenticating(client: InvoxClient, retrying: Retrying) -> Awaitable[None]:
    """The credential check with the run's own retry schedule, like every other API call."""
    delays = retry_delays(retrying.retries, retrying.retry_base_delay_s)
    check = authenticate.with_options(retries=retrying.retries, retry_delay_seconds=delays or 0)
    return check(client)


def batches(units: Sequence[Unit], files_per_task: int = 0) -> list[list[Unit]]:
    """Consecutive groups of at most ``files_per_task`` files (0 picks) and an hour of audio."""
    size = files_per_task or (1 if len(units) <= FEW_FILES else FILES_PER_TASK)
    groups: list[list[Unit]] = []
    audio = 0.0
    for unit in units:
        seconds = unit.duration_s or 0.0
        if not groups or len(groups[-1]) >= size or audio + seconds > AUDIO_PER_TASK_S:
            groups.append([])
            audio = 0.0
        groups[-1].append(unit)
        audio += seconds
    return groups


def batch_label(group: Sequence[Unit]) -> str:
    """The task run's name part: its file, or its first and last files and how many."""
    if len(group) == 1:
        return group[0].label
    return f"{group[0].label}…{group[-1].label} ({len(group)} files)"


@task(
    name="settle-files",
    task_run_name="settle[{label}]",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def settle_files(label: str, run: Run, work: list[Work]) -> State[list[Outcome]]:
    """Settle a group of files as one task run, on the flow's loop, client and slots; it ends
    Failed naming its failed files (see ``tasks.outcomes``)."""
    outcomes = list(await asyncio.gather(*(settle_unit(run, u, p) for u, p in work)))
    return group_state([u for u, _ in work], outcomes, run.retried)


@dataclass(frozen=True)
class OnLoop:
    """Files settled on the flow's event loop; groups of them label ``settle-files`` task runs.

    Groups are not gates: every file takes one of the run's slots in manifest order, whichever
    group it is in, and a group's task run ends when its last file does.
    """

    files_per_task: int
    concurrency: int

    async def __call__(self, run: Run, work: Sequence[Work]) -> list[Outcome]:
        places = {u.identity: p for u, p in work}
        slots = run.slots

        async def open_group(group: list[Unit]) -> list[Outcome]:
            try:
                items = [(u, places[u.identity]) for u in group]
                called = settle_files(
                    batch_label(group), _as_is(run), _as_is(items), return_state=True
                )
                state = await cast(Awaitable[State[Any]], called)
                return cast(list[Outcome], await outcomes_of(state))
            finally:
                slots.forget(u.identity for u in group)

        running: list[asyncio.Task[list[Outcome]]] = []
        groups = batches([u for u, _ in work], self.files_per_task)
        for group in groups:
            # Open the next task run once fewer files wait than there are slots: a freed slot
            # always finds a file waiting, and few task runs sit idle in the UI.
            await slots.until_fewer_expected(slots.size)
            slots.expect(u.identity for u in group)
            running.append(asyncio.create_task(open_group(group)))
        settled = await asyncio.gather(*running)
        by_identity = {
            u.identity: o
            for g, s in zip(groups, settled, strict=True)
            for u, o in zip(g, s, strict=True)
        }
        return [by_identity[u.identity] for u, _ in work]


@dataclass(frozen=True)
class _DaskJob:
    """What a Dask task needs to rebuild the run on a worker (no client, no loop objects)."""

    settings: InvoxSettings
    ledger: LedgerTarget  # its URL a SecretStr: a password never shows
    cache_expiration: dt.timedelta | None
    spend: Spend
    polling: Polling
    retrying: Retrying
    flow_run_id: str | None
    callback_url: str | None
    across_runs: AcrossRuns | None


TaskResult = tuple[Outcome, dict[str, int], InvoxError | None]


@task(name="settle", persist_result=False, cache_policy=NO_CACHE)
async def settle(job: _DaskJob, unit: Unit, place: Generation) -> State[TaskResult]:
    """Settle one identity with its own client: its outcome, the calls made, a fatal stop (the
    task run Failed when the file failed)."""
    ledger = Ledger(job.ledger, job.cache_expiration)
    async with ledger, counted_client(job.settings) as (client, counter):
        run = Run(
            client,
            ledger,
            spend=job.spend,
            polling=job.polling,
            retrying=job.retrying,
            log=get_run_logger(),
            flow_run_id=job.flow_run_id,
            callback_url=job.callback_url,
            across_runs=job.across_runs,
            budget=BudgetPlan.spent(job.spend.max_audio_hours)
            if job.spend.max_audio_hours
            else None,
        )
        outcome = await settle_unit(run, unit, place)
    return group_state([unit], [outcome], run.retried, data=(outcome, counter.as_dict(), run.stop))


@dataclass(frozen=True)
class OnDask:
    """One ``settle`` task per file on a Dask cluster (a threaded LocalCluster by default)."""

    settings: InvoxSettings
    address: str | None
    threads: int

    def _runner(self) -> Any:
        from prefect_dask.task_runners import DaskTaskRunner

        if self.address:
            return DaskTaskRunner(address=self.address)
        local = {"n_workers": 1, "threads_per_worker": self.threads, "processes": False}
        return DaskTaskRunner(cluster_kwargs={**local, "dashboard_address": None})

    async def __call__(self, run: Run, work: Sequence[Work]) -> list[Outcome]:
        job = _DaskJob(
            self.settings,
            run.ledger.target,
            run.ledger.cache_expiration,
            run.spend,
            run.polling,
            run.retrying,
            run.flow_run_id,
            run.callback_url,
            run.across_runs,
        )
        with self._runner() as runner:
            futures = [
                runner.submit(settle, parameters={"job": job, "unit": u, "place": p})
                for u, p in work
            ]
            results = [await _collect(future) for future in futures]
        calls: Counter[str] = Counter()
        for (unit, _), (outcome, made, stop) in zip(work, results, strict=True):
            calls.update(made)
            run.stop = run.stop or stop
            run.progress.finish(outcome.status, unit.duration_s, began=False)
        run.calls.counts.update(calls)
        return [outcome for outcome, _, _ in results]


async def _collect(future: Any) -> TaskResult:
    """The task's result, or a failed outcome when the task itself failed (worker lost, bug)."""
    try:
        result = unwrap(await asyncio.to_thread(future.result, raise_on_failure=False))
    except Exception as exc:
        message = f"the Dask task settling this file failed ({type(exc).__name__}); rerun it"
        return Outcome.failed(ErrorType.INTERNAL_ERROR, message), {}, None
    return cast(TaskResult, result)
