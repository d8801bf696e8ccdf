"""Settling one audio identity: resume or submit, upload, poll; shared by every execution mode.

The flow awaits these on its own event loop (one client, one gate); ``task_runner="dask"`` runs
``settle_unit`` inside a task per file. Either way, what is already paid for is never paid again.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from prefect import get_run_logger
from prefect.runtime import flow_run

from invox import InvoxClient, InvoxError, InvoxSettings, NotFoundError, PollPolicy
from invox_batch.budget import BudgetPlan
from tasks import transcription
from tasks.ledger import Generation, Ledger, result_key, upload_key

from .budgeting import budget_outcome, over_budget, plan_units
from .callback_mode import Completion, PollCompletion
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
    """The state one flow run shares across its files: tasks, ledger, gate, fatal stop."""

    def __init__(self, ledger: Ledger, options: Options, concurrency: int) -> None:
        self.ledger = ledger
        self.options = options
        self.gate = asyncio.Semaphore(concurrency)
        self.stop: InvoxError | None = None
        self.budget = BudgetPlan(options.max_audio_hours)
        retrying: dict[str, Any] = {
            "retries": options.retries,
            "retry_delay_seconds": transcription.retry_delays(
                options.retries, options.retry_base_delay_s
            ),
        }
        cached: dict[str, Any] = {
            "result_storage": ledger.storage,
            "refresh_cache": options.force or None,
        }
        self.authenticate = transcription.authenticate.with_options(**retrying)
        self.presign = transcription.presign.with_options(**retrying)
        # Upload records never expire: forgetting one would pay for the audio again.
        self.upload = transcription.upload.with_options(**cached, **retrying)
        self.poll = transcription.poll.with_options(
            **cached, cache_expiration=ledger.cache_expiration
        )

    def policy(self, duration_s: float | None) -> PollPolicy:
        """First poll when the job is likely done, judged from the audio's duration."""
        first = (duration_s or 2.0) * self.options.first_poll_ratio
        return PollPolicy(
            timeout_s=self.options.poll_timeout_s,
            first_delay_s=min(max(first, 0.05), self.options.max_poll_interval_s),
            max_delay_s=self.options.max_poll_interval_s,
        )


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
    upload = place.upload
    if upload is None:
        slot = await run.presign(unit.label, unit.mime_type, run.options.callback_url)
        upload = await run.upload(
            file_id=unit.label,
            cache_key=upload_key(unit.identity, place.number),
            path=unit.path,
            mime_type=unit.mime_type,
            slot=slot,
            callback_url=run.options.callback_url,
        )
    try:
        result = await run.poll(
            file_id=unit.label,
            cache_key=result_key(unit.identity, place.number),
            request_id=str(upload["request_id"]),
            policy=await run.options.completion.policy(
                str(upload["request_id"]), run.policy(unit.duration_s)
            ),
        )
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
            places = {
                i: await ledger.locate(i, options.max_resubmits, options.force, run_id)
                for i in units
            }
            plan = plan_units(units.values(), places, options.max_audio_hours, run_id)
            run.budget = plan
            pending = sum(p.action in ("submit", "poll") for p in places.values())
            await authenticate_once(run, pending - len(plan.skipped))
            settled = await asyncio.gather(
                *(
                    over_budget(plan, i, units[i].duration_s, progress)
                    if i in plan.skipped
                    else settle_unit(run, units[i], places[i], progress)
                    for i in units
                )
            )
    return dict(zip(units, settled, strict=True)), counter.as_dict(), run.stop, plan
