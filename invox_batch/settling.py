"""Settling audio identities: resume or submit, upload, poll; one orchestration for every executor.

A *unit* is one unique audio identity: what is paid for, however many rows share it. The run
first locates every unit in the ledger, plans the audio-hours budget, settles what is already
paid for straight from the records, checks the credential once, and hands the rest to an
executor: the flow's own event loop (task runs labelling groups of files that share the run's
slots, handed out in manifest order) or a Dask cluster (one task per file).
Whatever the executor, each file goes through :func:`settle_unit`, and what is already paid for
is never paid again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import httpx

from invox import (
    TERMINAL_STATUSES,
    InvoxClient,
    InvoxError,
    InvoxSettings,
    NotFoundError,
    PollTimeoutError,
    PollTimer,
    ResponseLostError,
    UploadURLRejectedError,
)

from .budget import BudgetPlan, plan_units
from .callbacks import Completion
from .errors import FATAL_ERROR_TYPES, ErrorType, LedgerUnavailable
from .failpoints import failpoint
from .ledger import Generation, Ledger, Owner, confirm_landed, upload_key
from .parameters import Polling, Retrying, Spend
from .progress import ProgressTracker
from .records import Outcome, ResultRecord, Segment, UploadRecord, now_iso
from .slots import Slots
from .stopping import STOP_GRACE_S, Stop, Stopped, until_stopped

__all__ = [
    "AcrossRuns",
    "CallCounter",
    "Executor",
    "Retried",
    "Run",
    "Unit",
    "Work",
    "counted_client",
    "retry_delays",
    "settle_all",
    "settle_unit",
    "with_retries",
]

T = TypeVar("T")
Log = logging.Logger | logging.LoggerAdapter[logging.Logger]
RETRY_AFTER_CAP_S = 120.0
ENDPOINTS = ("token", "presign", "upload", "status")
FORGOTTEN_MESSAGE = (
    "this audio's transcript was erased by `invox-batch forget`; not transcribed again: "
    "drop the row from the manifest, or rerun with --force to transcribe it anew"
)


@dataclass(frozen=True)
class Unit:
    """One unique audio identity: the unit that is paid for, however many rows share it."""

    identity: str
    label: str
    path: str
    mime_type: str
    duration_s: float | None


Work = tuple[Unit, Generation]
# A slot held per file in a cap across runs and shards (a Prefect global concurrency limit).
AcrossRuns = Callable[[], AbstractAsyncContextManager[object]]


@dataclass(frozen=True)
class Retried:
    """One step retried for one audio and why, so its task run can say so (no message text)."""

    identity: str
    step: str
    error_type: str


class Executor(Protocol):
    """Settles units that need the API, each through ``settle_unit``, in manifest order."""

    async def __call__(self, run: Run, work: Sequence[Work]) -> list[Outcome]: ...


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
        return {k: self.counts[k] for k in ENDPOINTS}


@asynccontextmanager
async def counted_client(settings: InvoxSettings) -> AsyncIterator[tuple[InvoxClient, CallCounter]]:
    """A client whose every HTTP call is counted by endpoint."""
    counter = CallCounter(settings.token_path)
    hooks: dict[str, list[Any]] = {"request": [counter]}
    async with httpx.AsyncClient(timeout=settings.timeout(), event_hooks=hooks) as http:
        yield InvoxClient(settings, http=http), counter


def retry_delays(retries: int, base_s: float, cap_s: float = 30.0) -> list[float]:
    """Exponential delays: base, 2·base, 4·base… capped."""
    return [min(base_s * 2**n, cap_s) for n in range(retries)]


async def with_retries(
    step: Callable[[int], Awaitable[T]],
    *,
    retries: int,
    delays: Sequence[float],
    log: Log,
    what: str,
    jitter: float = 0.5,
    on_retry: Callable[[InvoxError], None] | None = None,
) -> T:
    """Run ``step(attempt)`` again after errors the client marked retryable, honouring Retry-After."""
    attempt = 0
    while True:
        try:
            return await step(attempt)
        except InvoxError as exc:
            if not exc.retryable or attempt >= retries:
                raise
            if exc.retry_after:
                await asyncio.sleep(min(exc.retry_after, RETRY_AFTER_CAP_S))
            delay = delays[min(attempt, len(delays) - 1)] if delays else 0.0
            delay *= random.uniform(1 - jitter, 1 + jitter)
            attempt += 1
            if on_retry is not None:
                on_retry(exc)
            log.warning(
                "%s failed (%s); retry %d of %d in %.1f s",
                what,
                exc.error_type,
                attempt,
                retries,
                delay,
            )
            await asyncio.sleep(delay)


class Run:
    """What one flow run (or one Dask task of it) shares across its files."""

    def __init__(
        self,
        client: InvoxClient,
        ledger: Ledger,
        *,
        spend: Spend,
        polling: Polling,
        retrying: Retrying,
        log: Log,
        flow_run_id: str | None,
        concurrency: int = 1,
        completion: Completion | None = None,
        callback_url: str | None = None,
        budget: BudgetPlan | None = None,
        progress: ProgressTracker | None = None,
        calls: CallCounter | None = None,
        across_runs: AcrossRuns | None = None,
        stopping: Stop | None = None,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.spend, self.polling, self.retrying = spend, polling, retrying
        self.log = log
        self.flow_run_id = flow_run_id
        self.owner = Owner(flow_run_id)
        self.slots = Slots(concurrency)
        self.completion = completion
        self.callback_url = callback_url
        self.budget = budget or BudgetPlan(spend.max_audio_hours)
        self.progress = progress or ProgressTracker(0)
        self.calls = calls or CallCounter(client.settings.token_path)
        self.across_runs = across_runs
        self.stop: InvoxError | None = None
        self.stopping = stopping or Stop()  # a signal's: no new file starts, uploads finish
        self.retried: Counter[Retried] = Counter()
        self.delays = retry_delays(retrying.retries, retrying.retry_base_delay_s)
        self.timer = PollTimer(prior_ratio=polling.first_poll_ratio)
        self._landed: dict[str, float] = {}  # request id -> when its upload was accepted

    def held_across_runs(self) -> AbstractAsyncContextManager[object]:
        """The slot a file also holds in a cap shared by every run, when there is one."""
        return self.across_runs() if self.across_runs else nullcontext()

    async def retrying_step(self, step: Callable[[int], Awaitable[T]], unit: Unit, name: str) -> T:
        """One per-file step with the run's retry schedule, each retry counted for the file."""

        def count(exc: InvoxError) -> None:
            self.retried[Retried(unit.identity, name, exc.error_type)] += 1

        return await with_retries(
            step,
            retries=self.retrying.retries,
            delays=self.delays,
            log=self.log,
            what=f"{name} of {unit.label}",
            on_retry=count,
        )

    async def submit(self, unit: Unit, generation: int) -> UploadRecord:
        """Claim the attempt, then presign and upload; the accepted upload is on record before
        anything else happens. Another run's claim is waited for, and its upload adopted."""

        def waiting(holder: str) -> None:
            self.log.info("%s is being uploaded by %s; waiting for it", unit.label, holder)

        async with self.ledger.claim(unit.identity, generation, self.owner, waiting) as paid:
            if paid is not None:
                self.log.info(
                    "%s was uploaded by another run as request %s", unit.label, paid.request_id
                )
                return paid
            with self.stopping.step():  # a signal lets this upload finish and be recorded
                return await self._claimed_submit(unit, generation)

    async def _claimed_submit(self, unit: Unit, generation: int) -> UploadRecord:
        async def presign(_: int) -> tuple[str, str]:
            slot = await self.client.generate_presigned_url(unit.mime_type, self.callback_url)
            failpoint("presign")
            return slot.presigned_url, slot.request_id

        slot = await self.retrying_step(presign, unit, "presign")
        key = upload_key(unit.identity, generation)
        record = await self.retrying_step(
            lambda attempt: self._send(unit, key, slot, fresh_url=attempt > 0), unit, "upload"
        )
        landed = time.monotonic()
        await self.ledger.save_upload(unit.identity, generation, record)
        self._landed[record.request_id] = landed
        return record

    async def _send(
        self, unit: Unit, key: str, slot: tuple[str, str], *, fresh_url: bool
    ) -> UploadRecord:
        """PUT the audio once; a refused URL gets one fresh presign, a landed earlier try is adopted."""
        grace = self.client.settings.upload_confirm_s
        landed = await self.ledger.find_landed(self.client, key, grace)
        if landed is not None:  # an earlier attempt's audio arrived but its record was never saved
            self.log.warning(
                "%s was already received as request %s; not uploading again", unit.label, landed
            )
            return self._upload_record(landed)
        url, request_id = slot
        if fresh_url:  # contract §10 #14: never reuse an upload URL after a failed PUT
            url, request_id = await self._presign_again(unit)
        try:
            await self._put(unit, key, url, request_id)
        except UploadURLRejectedError:
            self.log.warning("upload URL for %s refused; requesting a fresh one", unit.label)
            url, request_id = await self._presign_again(unit)
            await self._put(unit, key, url, request_id)
        failpoint("upload")  # accepted by the provider, record not yet saved: the riskiest instant
        self.log.info("uploaded %s as request %s", unit.label, request_id)
        return self._upload_record(request_id)

    async def _presign_again(self, unit: Unit) -> tuple[str, str]:
        fresh = await self.client.generate_presigned_url(unit.mime_type, self.callback_url)
        return fresh.presigned_url, fresh.request_id

    def _upload_record(self, request_id: str) -> UploadRecord:
        return UploadRecord(request_id, now_iso(), self.flow_run_id)

    async def _put(self, unit: Unit, key: str, url: str, request_id: str) -> None:
        """One PUT, announced first; a lost answer is settled by asking the API, not by a re-upload."""
        await self.ledger.record_intent(key, request_id)
        try:
            await self.client.upload(url, unit.path, unit.mime_type)
        except ResponseLostError:
            grace = self.client.settings.upload_confirm_s
            if not await confirm_landed(self.client, request_id, grace):
                await self.ledger.forget_intent(
                    key, request_id
                )  # not received: the retry uploads anew
                raise
            self.log.warning("upload answer lost, but request %s received the audio", request_id)
        except (InvoxError, OSError):
            await self.ledger.forget_intent(
                key, request_id
            )  # refused or never sent: nothing to confirm
            raise

    async def collect(self, unit: Unit, upload: UploadRecord, generation: int) -> ResultRecord:
        """Wait for the job's terminal result and keep it; a timeout keeps nothing (resumable)."""
        request_id = upload.request_id
        scheduled = self.timer.policy(
            unit.duration_s,
            timeout_s=self.polling.poll_timeout_s,
            max_delay_s=self.polling.max_poll_interval_s,
        )
        policy = (
            await self.completion.policy(request_id, scheduled) if self.completion else scheduled
        )
        landed = self._landed.pop(request_id, None)
        learn = None
        if policy is scheduled:  # polled on the timer's schedule: learn from it

            def learn(attempt: int, status: str) -> None:
                """Teach the timer whether this job was done at its first poll (or second)."""
                done = status in TERMINAL_STATUSES
                if attempt == 1:
                    first = scheduled.first_delay_s
                    self.timer.observe(unit.duration_s, done, first_delay_s=first)
                elif attempt == 2:
                    self.timer.observe_retry(unit.duration_s, done, scheduled)

            if landed is not None:  # processing began when the audio landed
                since = time.monotonic() - landed
                policy = dataclasses.replace(
                    policy,
                    first_delay_s=max(0.0, policy.first_delay_s - since),
                    age_at_start_s=since,
                )
        failpoint("poll")
        try:
            result = await self.client.wait_for_transcription(request_id, policy, on_poll=learn)
        except PollTimeoutError:
            await self.ledger.mark_timeout(unit.identity, generation)
            raise
        self.log.info("%s ended %s (request %s)", unit.label, result.status, request_id)
        record = ResultRecord(
            request_id=request_id,
            status=result.status,
            segments=tuple(Segment(s.start, s.end, s.text, s.speaker) for s in result.segments),
            vtt=result.vtt,
            error_message=result.error_message,
        )
        await self.ledger.save_result(unit.identity, generation, record)
        return record


async def _submit_and_poll(run: Run, unit: Unit, place: Generation) -> Outcome:
    """Resume a recorded job, or submit anew; a job the provider no longer knows is resubmitted."""
    try:
        return await _submit_and_poll_once(run, unit, place)
    except NotFoundError:
        if place.upload is None:
            raise
    run.retried[Retried(unit.identity, "resubmit", ErrorType.NOT_FOUND)] += 1
    run.log.warning(
        "request %s of %s is unknown to the API (expired or lost); submitting the audio again",
        place.upload.request_id,
        unit.label,
    )
    if not run.budget.admit(unit.identity, unit.duration_s):
        return run.budget.outcome(unit.identity)
    return await _submit_and_poll_once(run, unit, Generation(place.number + 1, "submit"))


async def _submit_and_poll_once(run: Run, unit: Unit, place: Generation) -> Outcome:
    """Do whatever is still unpaid for one identity: presign+upload if needed, then poll."""
    upload = place.upload or await run.submit(unit, place.number)
    try:
        result = await run.collect(unit, upload, place.number)
    except NotFoundError:
        raise
    except InvoxError as exc:
        return Outcome.from_error(exc, upload=upload, attempts=place.number + 1)
    return Outcome.from_records(upload, result, attempts=place.number + 1, from_cache=False)


def _from_ledger(place: Generation, max_resubmits: int) -> Outcome:
    """A file already settled by an earlier run: its outcome from the records, no API call."""
    assert place.upload is not None and place.result is not None
    outcome = Outcome.from_records(
        place.upload, place.result, attempts=place.number + 1, from_cache=True
    )
    if place.action == "done":
        return outcome
    return dataclasses.replace(
        outcome,
        error_message=(
            f"the provider failed this audio {outcome.attempts} times (max_resubmits="
            f"{max_resubmits}); not resubmitted again: check the file, then rerun with --force"
        ),
    )


def _unexpected(run: Run, unit: Unit, exc: Exception) -> Outcome:
    """A failed row for an error the client did not classify (a file vanished, a bug)."""
    if isinstance(exc, LedgerUnavailable):
        run.log.error("%s: %s", unit.label, exc)
        return Outcome.failed(ErrorType.LEDGER_UNAVAILABLE, str(exc))
    run.log.error("%s failed unexpectedly: %s", unit.label, type(exc).__name__, exc_info=exc)
    if isinstance(exc, OSError):
        return Outcome.failed(
            ErrorType.UNREADABLE,
            f"could not read the audio file ({type(exc).__name__}); "
            "check it still exists and is readable, then rerun",
        )
    return Outcome.failed(
        ErrorType.INTERNAL_ERROR,
        f"unexpected {type(exc).__name__}; see the flow run logs, then rerun",
    )


async def settle_unit(run: Run, unit: Unit, place: Generation) -> Outcome:
    """The final outcome of one identity in this run, from the API (one of the run's slots held,
    and one of the cap across runs when there is one)."""
    async with run.slots.slot(unit.identity):
        await run.stopping.admit()
        async with run.held_across_runs():
            run.progress.begin()
            if run.stop is not None:
                outcome = Outcome.failed(
                    ErrorType(run.stop.error_type), f"not attempted: {run.stop.message}"
                )
            else:
                try:
                    outcome = await _submit_and_poll(run, unit, place)
                except InvoxError as exc:
                    if exc.error_type in FATAL_ERROR_TYPES:
                        run.stop = run.stop or exc
                    outcome = Outcome.from_error(exc, upload=None, attempts=place.number)
                except Exception as exc:  # one file's surprise must not sink the others' results
                    outcome = _unexpected(run, unit, exc)
    run.progress.finish(outcome.status, unit.duration_s, began=True)
    return outcome


async def settle_all(
    run: Run,
    units: Mapping[str, Unit],
    executor: Executor,
    authenticate: Callable[[], Awaitable[None]],
) -> dict[str, Outcome]:
    """Every unit's outcome: budget-refused, from the ledger, or settled by the executor."""
    spend = run.spend
    forgotten = set() if spend.force else await run.ledger.tombstoned(units)
    live = {i: u for i, u in units.items() if i not in forgotten}
    places = await run.ledger.locate_all(live, spend.max_resubmits, spend.force, run.flow_run_id)
    run.budget = plan_units(live.values(), places, spend.max_audio_hours, run.flow_run_id)
    outcomes: dict[str, Outcome] = {}
    for identity, unit in units.items():
        place = places.get(identity)
        if place is None:  # erased by `forget`: neither transcribed nor paid for again
            outcomes[identity] = Outcome.failed(ErrorType.FORGOTTEN, FORGOTTEN_MESSAGE)
        elif identity in run.budget.skipped:
            outcomes[identity] = run.budget.outcome(identity)
        elif place.action in ("done", "exhausted"):  # no API call, so no task run either
            outcomes[identity] = _from_ledger(place, spend.max_resubmits)
        else:
            continue
        run.progress.finish(outcomes[identity].status, unit.duration_s, began=False)
    work = [(units[i], places[i]) for i in units if i not in outcomes]
    run.slots.rank([unit.identity for unit, _ in work])
    if work:
        settling = _settle_work(run, work, executor, authenticate)
        try:
            settled = await until_stopped(settling, run.stopping, STOP_GRACE_S)
        except Stopped as stopped:  # what was accepted is on record: a rerun goes on from there
            done = run.progress.snapshot().done
            raise Stopped(stopped.reason, done, len(units)) from None
        outcomes.update((unit.identity, o) for (unit, _), o in zip(work, settled, strict=True))
    return {i: outcomes[i] for i in units}


async def _settle_work(
    run: Run,
    work: Sequence[Work],
    executor: Executor,
    authenticate: Callable[[], Awaitable[None]],
) -> list[Outcome]:
    """The outcomes of the files that need the API, after one check of the credential."""
    try:
        await authenticate()
    except InvoxError as exc:  # refused or unreachable: every file says so, no task is sent
        run.stop = exc
    if run.stop is None:
        return await executor(run, work)
    return [await settle_unit(run, unit, place) for unit, place in work]
