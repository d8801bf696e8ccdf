"""Settling one audio identity: resume or submit, upload, poll; shared by every execution mode.

The flow awaits these on its own event loop (one client, one gate); ``task_runner="dask"`` runs
``settle_unit`` inside a task per file. Either way, what is already paid for is never paid again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from invox import (
    TERMINAL_STATUSES,
    InvoxClient,
    InvoxError,
    InvoxSettings,
    NotFoundError,
    PollPolicy,
    PollTimer,
)
from invox_batch.budget import BudgetPlan
from invox_batch.callbacks import Completion, PollCompletion
from tasks import transcription
from tasks.ledger import Generation, Ledger, result_key, upload_key
from tasks.upload_intents import intents_in

from .batching import batch_label, batches
from .budgeting import budget_outcome, over_budget, plan_units
from .outcomes import Outcome, outcome_from_error, outcome_from_records
from .reporting import ProgressReporter

__all__ = [
    "FATAL_ERROR_TYPES",
    "CallCounter",
    "Options",
    "Run",
    "Unit",
    "authenticate_once",
    "settle_all",
    "settle_unit",
]

T = TypeVar("T")

# Errors that would hit every remaining file the same way: stop calling the API after one.
FATAL_ERROR_TYPES = frozenset(
    {"unauthorized", "forbidden", "api_unreachable", "configuration_error"}
)


@dataclass(frozen=True)
class Unit:
    """One unique audio identity: the unit that is paid for, however many rows share it."""

    identity: str
    label: str
    path: str
    mime_type: str
    duration_s: float | None


@dataclass(frozen=True)
class Options:
    """The flow parameters the per-file work needs, gathered once."""

    force: bool
    max_resubmits: int
    callback_url: str | None
    poll_timeout_s: float
    first_poll_ratio: float
    max_poll_interval_s: float
    retries: int
    retry_base_delay_s: float
    completion: Completion = dataclasses.field(default_factory=PollCompletion)
    max_audio_hours: float | None = None
    files_per_task: int = 0


class CallCounter:
    """Counts HTTP calls by endpoint through an httpx event hook: the run's cost evidence."""

    def __init__(self, token_path: str) -> None:
        self.counts: Counter[str] = Counter()
        self._token_path = token_path

    async def __call__(self, request: httpx.Request) -> None:
        path = request.url.path
        if request.method == "PUT":
            self.counts["upload"] += 1
        elif path.endswith(self._token_path):
            self.counts["token"] += 1
        elif path.endswith("/generate-presigned-url"):
            self.counts["presign"] += 1
        elif path.endswith("/get-transcription"):
            self.counts["status"] += 1

    def as_dict(self) -> dict[str, int]:
        return {k: self.counts[k] for k in ("token", "presign", "upload", "status")}


class Run:
    """The state one flow run shares across its files: ledger, gate, retries, fatal stop."""

    def __init__(self, ledger: Ledger, options: Options, concurrency: int) -> None:
        self.ledger = ledger
        self.options = options
        self.gate = asyncio.Semaphore(concurrency)
        self.stop: InvoxError | None = None
        self.budget = BudgetPlan(options.max_audio_hours)
        self.delays = transcription.retry_delays(options.retries, options.retry_base_delay_s)
        self.timer = PollTimer(prior_ratio=options.first_poll_ratio)
        self._landed: dict[str, float] = {}  # request id -> when its upload was accepted
        self.authenticate = transcription.authenticate.with_options(
            retries=options.retries, retry_delay_seconds=self.delays
        )

    def policy(self, duration_s: float | None) -> PollPolicy:
        """First poll when the job is likely done: duration times the speed seen so far."""
        return self.timer.policy(
            duration_s,
            timeout_s=self.options.poll_timeout_s,
            max_delay_s=self.options.max_poll_interval_s,
        )

    async def _retrying(self, step: Callable[[int], Awaitable[T]], what: str) -> T:
        """One per-file step with the run's retry schedule (see ``transcription.with_retries``)."""
        return await transcription.with_retries(
            step, retries=self.options.retries, delays=self.delays, what=what
        )

    async def submit(self, unit: Unit, generation: int) -> dict[str, Any]:
        """Presign and upload; the accepted upload is on record before anything else happens."""
        callback_url = self.options.callback_url
        slot = await self._retrying(
            lambda _: transcription.open_job(unit.label, unit.mime_type, callback_url),
            f"presign of {unit.label}",
        )
        key = upload_key(unit.identity, generation)
        with intents_in(self.ledger.root):
            record = await self._retrying(
                lambda attempt: transcription.send_audio(
                    unit.label,
                    key,
                    unit.path,
                    unit.mime_type,
                    slot,
                    callback_url,
                    fresh_url=attempt > 0,
                ),
                f"upload of {unit.label}",
            )
        landed = time.monotonic()
        await self.ledger.save(key, record)  # upload records never expire: that would pay again
        self._landed[str(record["request_id"])] = landed
        return record

    def _learner(self, unit: Unit, policy: PollPolicy) -> transcription.PollObserver:
        """Teach the timer whether this job was already done at its first poll."""

        def observe(attempt: int, status: str) -> None:
            if attempt == 1:
                terminal = status in TERMINAL_STATUSES
                self.timer.observe(unit.duration_s, terminal, first_delay_s=policy.first_delay_s)

        return observe

    async def collect(self, unit: Unit, upload: dict[str, Any], generation: int) -> dict[str, Any]:
        """Wait for the job's terminal result and keep it; a timeout keeps nothing (resumable)."""
        request_id = str(upload["request_id"])
        scheduled = self.policy(unit.duration_s)
        policy = await self.options.completion.policy(request_id, scheduled)
        learn = self._learner(unit, policy) if policy is scheduled else None
        landed = self._landed.pop(request_id, None)
        if policy is scheduled and landed is not None:  # processing began when the audio landed
            since = time.monotonic() - landed
            policy = dataclasses.replace(
                policy, first_delay_s=max(0.0, policy.first_delay_s - since)
            )
        result = await transcription.fetch_result(unit.label, request_id, policy, learn)
        key = result_key(unit.identity, generation)
        await self.ledger.save(key, result, self.ledger.cache_expiration)
        return result


async def _submit_and_poll(run: Run, unit: Unit, place: Generation) -> Outcome:
    """Resume a recorded job, or submit anew; a job the provider no longer knows is resubmitted."""
    try:
        return await _submit_and_poll_once(run, unit, place)
    except NotFoundError:
        if place.upload is None:
            raise
    get_run_logger().warning(
        "request %s of %s is unknown to the API (expired or lost); submitting the audio again",
        place.upload.get("request_id"),
        unit.label,
    )
    if not run.budget.admit(unit.identity, unit.duration_s):
        return budget_outcome(run.budget, unit.identity)
    return await _submit_and_poll_once(run, unit, Generation(place.number + 1, "submit"))


async def _submit_and_poll_once(run: Run, unit: Unit, place: Generation) -> Outcome:
    """Do whatever is still unpaid for one identity: presign+upload if needed, then poll."""
    upload = place.upload or await run.submit(unit, place.number)
    try:
        result = await run.collect(unit, upload, place.number)
    except NotFoundError:
        raise
    except InvoxError as exc:
        return outcome_from_error(exc, upload=upload, attempts=place.number + 1)
    return outcome_from_records(upload, result, attempts=place.number + 1, from_cache=False)


def _stopped(run: Run) -> Outcome:
    """The outcome of a file not attempted because the API refused or vanished for the run."""
    assert run.stop is not None
    return Outcome(
        status="failed",
        error_type=run.stop.error_type,
        error_message=f"not attempted: {run.stop.message}",
    )


async def settle_unit(
    run: Run, unit: Unit, place: Generation, progress: ProgressReporter
) -> Outcome:
    """The final outcome of one identity in this run, from the ledger or from the API."""
    if place.action in ("done", "exhausted"):
        assert place.upload is not None and place.result is not None
        outcome = outcome_from_records(
            place.upload, place.result, attempts=place.number + 1, from_cache=True
        )
        if place.action == "exhausted":
            outcome = _exhausted(outcome, run.options.max_resubmits)
        await progress.advance(outcome.status, unit.duration_s)
        return outcome
    async with run.gate:
        progress.begin()
        if run.stop is not None:
            outcome = _stopped(run)
        else:
            try:
                outcome = await _submit_and_poll(run, unit, place)
            except InvoxError as exc:
                if exc.error_type in FATAL_ERROR_TYPES:
                    run.stop = run.stop or exc
                outcome = outcome_from_error(exc, upload=None, attempts=place.number)
            except Exception as exc:  # one file's surprise must not sink the other files' results
                outcome = _unexpected(unit, exc)
    await progress.advance(outcome.status, unit.duration_s, began=True)
    return outcome


def _unexpected(unit: Unit, exc: Exception) -> Outcome:
    """A failed row for an error the client did not classify (a file vanished, a bug)."""
    get_run_logger().error(
        "%s failed unexpectedly: %s", unit.label, type(exc).__name__, exc_info=exc
    )
    if isinstance(exc, OSError):
        return Outcome(
            status="failed",
            error_type="unreadable",
            error_message=f"could not read the audio file ({type(exc).__name__}); "
            "check it still exists and is readable, then rerun",
        )
    return Outcome(
        status="failed",
        error_type="internal_error",
        error_message=f"unexpected {type(exc).__name__}; see the flow run logs, then rerun",
    )


def _exhausted(outcome: Outcome, max_resubmits: int) -> Outcome:
    """Say why a failed file is no longer resubmitted, and how to force it."""
    return dataclasses.replace(
        outcome,
        error_message=(
            f"the provider failed this audio {outcome.attempts} times (max_resubmits="
            f"{max_resubmits}); not resubmitted again: check the file, then rerun with --force"
        ),
    )


async def authenticate_once(run: Run, pending: int) -> None:
    """One token call before any upload; a refusal stops the run's API work at once."""
    if not pending:
        return
    try:
        await run.authenticate()
    except InvoxError as exc:
        run.stop = exc


def _as_is(value: T) -> T:
    """A task parameter Prefect passes through without walking it (records, gates, clients)."""
    return cast(T, quote(value))


@task(
    name="settle-files",
    task_run_name="settle[{label}]",
    cache_policy=NO_CACHE,
    persist_result=False,
)
async def settle_files(
    label: str, run: Run, work: list[tuple[Unit, Generation]], progress: ProgressReporter
) -> list[Outcome]:
    """Settle a group of files as one task run, on the flow's loop, client and gate."""
    return list(await asyncio.gather(*(settle_unit(run, u, p, progress) for u, p in work)))


async def settle_all(
    settings: InvoxSettings,
    ledger: Ledger,
    options: Options,
    units: dict[str, Unit],
    concurrency: int,
) -> tuple[dict[str, Outcome], dict[str, int], InvoxError | None, BudgetPlan]:
    """Settle every identity over one shared client: outcomes, calls made, fatal stop, budget."""
    counter = CallCounter(settings.token_path)
    progress = ProgressReporter(len(units))
    await progress.start()
    hooks: dict[str, list[Callable[..., Any]]] = {"request": [counter]}
    async with httpx.AsyncClient(timeout=settings.timeout(), event_hooks=hooks) as http:
        run = Run(ledger, options, concurrency)
        with transcription.using_client(InvoxClient(settings, http=http)):
            run_id = str(flow_run.id)
            places = await ledger.locate_all(units, options.max_resubmits, options.force, run_id)
            plan = plan_units(units.values(), places, options.max_audio_hours, run_id)
            run.budget = plan
            pending = sum(p.action in ("submit", "poll") for p in places.values())
            await authenticate_once(run, pending - len(plan.skipped))
            settled = await settle_in_batches(run, units, places, progress, concurrency)
    return settled, counter.as_dict(), run.stop, plan


async def settle_in_batches(
    run: Run,
    units: dict[str, Unit],
    places: dict[str, Generation],
    progress: ProgressReporter,
    concurrency: int,
) -> dict[str, Outcome]:
    """Settle what is paid for from the ledger, the rest as a few task runs of many files."""
    plan = run.budget
    outcomes = {i: await over_budget(plan, i, units[i].duration_s, progress) for i in plan.skipped}
    for i, place in places.items():
        if place.action in ("done", "exhausted"):  # no API call, so no task run either
            outcomes[i] = await settle_unit(run, units[i], place, progress)
    groups = batches([units[i] for i in places if i not in outcomes], run.options.files_per_task)
    size = max((len(g) for g in groups), default=1)
    # Enough task runs open to keep the gate full, not hundreds of them idle in the UI.
    opened = asyncio.Semaphore(max(2, 2 * math.ceil(concurrency / size)))

    async def one(group: list[Unit]) -> list[Outcome]:
        work = [(u, places[u.identity]) for u in group]
        async with opened:
            return await settle_files(
                batch_label(group), _as_is(run), _as_is(work), _as_is(progress)
            )

    results = await asyncio.gather(*(one(g) for g in groups))
    for group, settled in zip(groups, results, strict=True):
        outcomes.update((u.identity, o) for u, o in zip(group, settled, strict=True))
    return {i: outcomes[i] for i in units}
