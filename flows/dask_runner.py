"""``task_runner="dask"``: each unique audio settled as a Prefect task on a Dask cluster.

The default mode awaits every file on the flow's own event loop. Here each file becomes one
``settle`` task submitted to prefect-dask's ``DaskTaskRunner``: a ``LocalCluster`` (threads in
this process) when no scheduler address is given, else the cluster at that address. Each task
opens its own HTTP client and the same ledger, so never-pay-twice holds across Dask workers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.filesystems import WritableFileSystem

from invox import InvoxClient, InvoxError, InvoxSettings
from invox_batch.budget import BudgetPlan
from tasks import transcription
from tasks.ledger import Generation, Ledger

from .budgeting import over_budget, plan_units
from .outcomes import Outcome
from .reporting import ProgressReporter
from .settling import CallCounter, Options, Run, Unit, authenticate_once, settle_unit

__all__ = ["dask_task_runner", "settle_on_dask"]

TaskResult = tuple[Outcome, dict[str, int], InvoxError | None]


def dask_task_runner(address: str | None, threads: int) -> Any:
    """A runner for a cluster at ``address``, or a threaded in-process LocalCluster."""
    from prefect_dask.task_runners import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    local = {"n_workers": 1, "threads_per_worker": threads, "processes": False}
    return DaskTaskRunner(cluster_kwargs={**local, "dashboard_address": None})


@task(name="settle", persist_result=False, cache_policy=NO_CACHE)
async def settle(
    settings: InvoxSettings,
    storage: WritableFileSystem,
    expiration: dt.timedelta | None,
    options: Options,
    unit: Unit,
    place: Generation,
) -> TaskResult:
    """Settle one identity with its own client: its outcome, the calls made, a fatal stop."""
    ledger = Ledger(storage, expiration)  # the block the flow already saved: no re-save per file
    counter = CallCounter(settings.token_path)
    hooks: dict[str, list[Any]] = {"request": [counter]}
    async with httpx.AsyncClient(timeout=settings.timeout(), event_hooks=hooks) as http:
        run = Run(ledger, options, 1)
        # A task cannot charge the run's shared budget: under a cap, a lost job is left to a rerun.
        run.budget = BudgetPlan(options.max_audio_hours, (options.max_audio_hours or 0) * 3600)
        with transcription.using_client(InvoxClient(settings, http=http)):
            outcome = await settle_unit(run, unit, place, ProgressReporter(1))  # no artifact here
    return outcome, counter.as_dict(), run.stop


async def settle_on_dask(
    settings: InvoxSettings,
    ledger: Ledger,
    options: Options,
    units: dict[str, Unit],
    runner: Any,
    flow_run_id: str,
) -> tuple[dict[str, Outcome], dict[str, int], InvoxError | None, BudgetPlan]:
    """Submit one ``settle`` task per identity within budget; outcomes, calls, stop, budget."""
    places = await ledger.locate_all(units, options.max_resubmits, options.force, flow_run_id)
    plan = plan_units(units.values(), places, options.max_audio_hours, flow_run_id)
    progress = ProgressReporter(len(units))
    await progress.start()
    skipped = {i: await over_budget(plan, i, units[i].duration_s, progress) for i in plan.skipped}
    todo = {i: places[i] for i in units if i not in skipped}
    stopped, calls = await _check_credential(settings, ledger, options, units, todo, progress)
    settled = stopped or await _settle_all_on(runner, settings, ledger, options, units, todo)
    if not stopped:
        for identity, (outcome, _, _) in settled.items():
            await progress.advance(outcome.status, units[identity].duration_s)
    for _, made, _ in settled.values():
        calls.update(made)
    stop = next((s for _, _, s in settled.values() if s is not None), None)
    done = {identity: outcome for identity, (outcome, _, _) in settled.items()}
    outcomes = {i: skipped[i] if i in skipped else done[i] for i in units}
    return outcomes, {k: calls[k] for k in ("token", "presign", "upload", "status")}, stop, plan


async def _check_credential(
    settings: InvoxSettings,
    ledger: Ledger,
    options: Options,
    units: dict[str, Unit],
    todo: dict[str, Generation],
    progress: ProgressReporter,
) -> tuple[dict[str, TaskResult], Counter[str]]:
    """One token call from the flow before anything reaches the cluster, as in the default mode.

    A refused credential or an unreachable API settles every file here (cached ones from the
    ledger, the rest as not attempted) instead of sending a storm of doomed tasks to the cluster.
    """
    counter = CallCounter(settings.token_path)
    pending = sum(p.action in ("submit", "poll") for p in todo.values())
    hooks: dict[str, list[Any]] = {"request": [counter]}
    async with httpx.AsyncClient(timeout=settings.timeout(), event_hooks=hooks) as http:
        run = Run(ledger, options, 1)
        with transcription.using_client(InvoxClient(settings, http=http)):
            await authenticate_once(run, pending)
            stopped: dict[str, TaskResult] = {}
            if run.stop is not None:
                for i, place in todo.items():
                    stopped[i] = (await settle_unit(run, units[i], place, progress), {}, run.stop)
    return stopped, Counter(counter.as_dict())


async def _settle_all_on(
    runner: Any,
    settings: InvoxSettings,
    ledger: Ledger,
    options: Options,
    units: dict[str, Unit],
    todo: dict[str, Generation],
) -> dict[str, TaskResult]:
    """Run the ``settle`` tasks on the cluster; a task that dies still yields a failed row."""
    parameters = {
        "settings": settings,
        "storage": ledger.storage,
        "expiration": ledger.cache_expiration,
        "options": options,
    }
    with runner:
        futures = {
            identity: runner.submit(
                settle, parameters={**parameters, "unit": units[identity], "place": place}
            )
            for identity, place in todo.items()
        }
        return {identity: await _collect(future) for identity, future in futures.items()}


async def _collect(future: Any) -> TaskResult:
    """The task's result, or a failed outcome when the task itself failed (worker lost, bug)."""
    try:
        result: TaskResult = await asyncio.to_thread(future.result)
    except Exception as exc:
        message = f"the Dask task settling this file failed ({type(exc).__name__}); rerun it"
        return (
            Outcome(status="failed", error_type="internal_error", error_message=message),
            {},
            None,
        )
    return result
