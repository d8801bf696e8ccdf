"""Sandbox state: jobs and their status machine, tokens, stats, uploads on disk. No HTTP here."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import hmac
import logging
import os
import random
import secrets
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from sandbox.recognizer import audio_duration_s
from sandbox.settings import ENDPOINTS, Endpoint, Faults, SandboxSettings

__all__ = [
    "PUBLIC_STATUS",
    "TRANSITIONS",
    "CallbackAttempt",
    "InvalidTransition",
    "Job",
    "JobState",
    "PublicStatus",
    "RandomStreams",
    "SandboxBackend",
    "Segment",
    "Stats",
    "Timings",
    "TokenStore",
    "Transcriber",
    "TranscriptionFailed",
    "UploadStore",
    "in_heavy_tail",
]

logger = logging.getLogger(__name__)

INJECTED_ERROR = "Transcription failed (injected by sandbox)"
EMPTY_AUDIO_ERROR = "audio file is empty"
INTERNAL_ERROR = "Transcription failed (internal sandbox error)"

PublicStatus = Literal["PENDING", "COMPLETED", "ERROR"]


@dataclass(frozen=True)
class Segment:
    """One transcript segment; times in seconds, already rounded to 2 decimals."""

    start: float
    end: float
    text: str

    def to_wire(self) -> dict[str, Any]:
        """The polled segment shape ``{text, start, end}`` (no speaker, contract §5.2)."""
        return {"text": self.text, "start": self.start, "end": self.end}


class JobState(enum.StrEnum):
    """Internal job states; the API folds the first two into ``PENDING``."""

    AWAITING_UPLOAD = "AWAITING_UPLOAD"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"


TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.AWAITING_UPLOAD: frozenset({JobState.PROCESSING}),
    JobState.PROCESSING: frozenset({JobState.COMPLETED, JobState.ERROR}),
    JobState.COMPLETED: frozenset(),
    JobState.ERROR: frozenset(),
}

PUBLIC_STATUS: Mapping[JobState, PublicStatus] = {
    JobState.AWAITING_UPLOAD: "PENDING",
    JobState.PROCESSING: "PENDING",
    JobState.COMPLETED: "COMPLETED",
    JobState.ERROR: "ERROR",
}


class InvalidTransition(RuntimeError):
    """A state change the transition table does not allow: a sandbox bug, never a client error."""


class TranscriptionFailed(Exception):
    """Processing failed for a reason worth showing the client as ``errorMessage``."""


@dataclass(eq=False)
class Job:
    """One ``requestId``: what was presigned, what was uploaded, and the outcome."""

    request_id: str
    mime_type: str
    callback_url: str | None
    url_expires: int
    state: JobState = JobState.AWAITING_UPLOAD
    uploading: bool = False
    sha256: str | None = None
    size: int = 0
    segments: tuple[Segment, ...] = ()
    error_message: str | None = None
    # Monotonic times for time-to-result stats: upload completed, terminal, first terminal GET.
    started_at: float | None = None
    finished_at: float | None = None
    observed_at: float | None = None
    status_calls: int = 0

    @property
    def public_status(self) -> PublicStatus:
        """What ``get-transcription`` reports for this job."""
        return PUBLIC_STATUS[self.state]

    @property
    def terminal(self) -> bool:
        """Whether the job can change no more."""
        return not TRANSITIONS[self.state]

    def _advance(self, new: JobState) -> None:
        """Every state change goes through the table, so illegal ones fail loudly."""
        if new not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"job {self.request_id}: {self.state} -> {new} is not allowed")
        self.state = new
        if self.terminal:
            self.finished_at = time.monotonic()

    def claim_upload(self) -> bool:
        """Reserve the single upload this URL allows; False if used or already in progress."""
        if self.state is not JobState.AWAITING_UPLOAD or self.uploading:
            return False
        self.uploading = True
        return True

    def release_upload(self) -> None:
        """An upload attempt failed before completing, so the URL may be used again."""
        self.uploading = False

    def begin_processing(self, sha256: str, size: int) -> None:
        """The upload completed: record what arrived and start processing."""
        self._advance(JobState.PROCESSING)
        self.sha256, self.size, self.uploading = sha256, size, False
        self.started_at = time.monotonic()

    def complete(self, segments: list[Segment]) -> None:
        """Processing produced a transcript."""
        self._advance(JobState.COMPLETED)
        self.segments = tuple(segments)

    def fail(self, message: str) -> None:
        """Processing failed; the message becomes ``errorMessage``."""
        self._advance(JobState.ERROR)
        self.error_message = message


class TokenStore:
    """Opaque bearer tokens, each with a monotonic expiry fixed at issue time."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}

    def issue(self, ttl_s: float, value: str | None = None) -> str:
        """A new token (random unless ``value`` is given) valid for ``ttl_s`` seconds from now."""
        now = time.monotonic()
        self._expiry = {t: exp for t, exp in self._expiry.items() if exp > now}
        token = value or secrets.token_urlsafe(32)
        self._expiry[token] = now + ttl_s
        return token

    def is_valid(self, token: str) -> bool:
        """Known and not yet expired."""
        expiry = self._expiry.get(token)
        return expiry is not None and expiry > time.monotonic()

    def clear(self) -> None:
        """Forget every token (control-plane reset)."""
        self._expiry.clear()


@dataclass
class CallbackAttempt:
    """One callback delivery attempt (or the decision to drop it), for the control plane."""

    request_id: str
    url: str
    attempt: int
    status: int | None = None
    error: str | None = None
    dropped: bool = False

    def to_wire(self) -> dict[str, Any]:
        """The record shape served by ``GET /_sandbox/callbacks``."""
        return {
            "requestId": self.request_id,
            "url": self.url,
            "attempt": self.attempt,
            "status": self.status,
            "error": self.error,
            "dropped": self.dropped,
        }


@dataclass
class Timings:
    """Running sums over jobs a get-transcription saw terminal: a few numbers, whatever the count."""

    jobs: int = 0
    processing_s: float = 0.0
    time_to_result_s: float = 0.0
    status_calls: int = 0

    def observe(self, job: Job, now: float) -> None:
        """``job`` was just reported terminal to the client for the first time."""
        assert job.started_at is not None and job.finished_at is not None
        self.jobs += 1
        self.processing_s += job.finished_at - job.started_at
        self.time_to_result_s += now - job.started_at
        self.status_calls += job.status_calls

    def to_wire(self) -> dict[str, Any]:
        """Means over the observed jobs (None before the first), as ``/_sandbox/stats`` serves."""
        n = self.jobs
        return {
            "jobs": n,
            "mean_processing_s": self.processing_s / n if n else None,
            "mean_time_to_result_s": self.time_to_result_s / n if n else None,
            "status_calls_per_job": self.status_calls / n if n else None,
        }


@dataclass
class Stats:
    """Counters served by ``GET /_sandbox/stats``; injected faults count like real answers."""

    requests: Counter[str] = field(default_factory=Counter)
    responses: dict[str, Counter[str]] = field(default_factory=dict)
    uploads_by_sha256: Counter[str] = field(default_factory=Counter)
    callbacks: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)
    max_inflight_seen: int = 0
    timings: Timings = field(default_factory=Timings)

    def count_request(self, endpoint: Endpoint) -> None:
        """A request reached an API endpoint."""
        self.requests[endpoint] += 1

    def count_injected(self, kind: str, hit: bool) -> None:
        """A fault was drawn (``kind`` is ``<fault>:<endpoint>``); misses leave no zero entries."""
        if hit:
            self.injected[kind] += 1

    def count_response(self, endpoint: Endpoint, status: int) -> None:
        """An API endpoint answered with ``status``."""
        self.responses.setdefault(endpoint, Counter())[str(status)] += 1

    def to_wire(self, jobs: Mapping[PublicStatus, int]) -> dict[str, Any]:
        """Every key present (zeros included) so tests can index without guarding."""
        return {
            "requests": {e: self.requests[e] for e in ENDPOINTS},
            "responses": {e: dict(self.responses.get(e, Counter())) for e in ENDPOINTS},
            "uploads_by_sha256": dict(self.uploads_by_sha256),
            "jobs": dict(jobs),
            "callbacks": {k: self.callbacks[k] for k in ("sent", "delivered", "failed", "dropped")},
            "injected": dict(self.injected),
            "max_inflight_seen": self.max_inflight_seen,
            "timings": self.timings.to_wire(),
        }


class UploadStore:
    """Uploaded audio on disk: medical data, so a private dir (0700), files 0600, wiped on exit."""

    def __init__(self, parent: Path | None) -> None:
        self._parent = parent
        self._dir: Path | None = None

    def _directory(self) -> Path:
        """Created lazily, so an app that never receives an upload leaves nothing behind."""
        if self._dir is None:
            if self._parent is not None:
                self._parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix="invox-sandbox-", dir=self._parent))
            self._dir.chmod(0o700)
        return self._dir

    def path_for(self, request_id: str) -> Path:
        """Where the audio for ``request_id`` lives while it is being received and processed."""
        return self._directory() / f"{request_id}.audio"

    def create(self, request_id: str) -> BinaryIO:
        """A fresh owner-only file for the upload (O_EXCL: never reuse or follow a link)."""
        path = self.path_for(request_id)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        return os.fdopen(fd, "wb")

    def delete(self, request_id: str) -> None:
        """Drop one upload; only its sha256 is kept, on the job."""
        if self._dir is not None:
            (self._dir / f"{request_id}.audio").unlink(missing_ok=True)

    def clear(self) -> None:
        """Drop every upload but keep the directory (control-plane reset)."""
        if self._dir is not None:
            for path in self._dir.glob("*.audio"):
                path.unlink(missing_ok=True)

    def close(self) -> None:
        """Remove the directory and everything in it (shutdown)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class RandomStreams:
    """One RNG per purpose, each derived from the seed, so fault decisions replay exactly."""

    def __init__(self, seed: int | None) -> None:
        self._seed = seed
        self._streams: dict[str, random.Random] = {}

    def __call__(self, purpose: str) -> random.Random:
        """The stream for ``purpose`` (e.g. ``fault:token``, ``job_error``)."""
        stream = self._streams.get(purpose)
        if stream is None:
            stream = (
                random.Random(f"{self._seed}:{purpose}")
                if self._seed is not None
                else random.Random()
            )
            self._streams[purpose] = stream
        return stream


class Transcriber(Protocol):
    """Turns uploaded audio into segments (instant or ASR); raises TranscriptionFailed."""

    async def transcribe(self, path: Path, sha256: str) -> list[Segment]:
        """Segments for the audio at ``path``."""
        ...

    async def aclose(self) -> None:
        """Release workers (e.g. the recognizer's process pool)."""
        ...


Notifier = Callable[[Job], Awaitable[None]]


def in_heavy_tail(sha256: str, share: float, seed: int | None) -> bool:
    """Whether audio with this digest is among the slow ``share`` of jobs, for this seed."""
    if not share:
        return False
    key = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(key[:8], "big") / 2**64 < share


class SandboxBackend:
    """All mutable sandbox state, like a moto backend; routes only translate HTTP to these calls."""

    def __init__(self, settings: SandboxSettings, transcriber: Transcriber) -> None:
        self.settings = settings
        self.transcriber = transcriber
        self.notifier: Notifier | None = None
        self.url_secret = secrets.token_bytes(32)
        self.uploads = UploadStore(settings.upload_dir)
        self.faults = settings.faults
        self.random = RandomStreams(self.faults.seed)
        self.jobs: dict[str, Job] = {}
        self.tokens = TokenStore()
        self.stats = Stats()
        self.callback_log: list[CallbackAttempt] = []
        self.inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # -- faults ---------------------------------------------------------------------------

    def set_faults(self, faults: Faults, *, reseed: bool) -> None:
        """Swap the fault set; reseed when asked or when the seed changed."""
        if reseed or faults.seed != self.faults.seed:
            self.random = RandomStreams(faults.seed)
        self.faults = faults

    def draw_fault(self, endpoint: Endpoint) -> Literal[429, 500, 503] | None:
        """One uniform draw per request decides 429, 503, 500 or a normal answer."""
        rates = (
            (429, self.faults.rate_429.get(endpoint, 0.0)),
            (503, self.faults.rate_503.get(endpoint, 0.0)),
            (500, self.faults.rate_500.get(endpoint, 0.0)),
        )
        if sum(rate for _, rate in rates) <= 0.0:
            return None
        draw = self.random(f"fault:{endpoint}").random()
        for status, rate in rates:
            if draw < rate:
                self.stats.count_injected(f"{status}:{endpoint}", True)
                return status  # type: ignore[return-value]
            draw -= rate
        return None

    def _draw(self, rate: float, stream: str, counted_as: str | None = None) -> bool:
        """One seeded draw at ``rate`` (no stream is touched at 0), counted when asked."""
        hit = rate > 0.0 and self.random(stream).random() < rate
        if counted_as is not None:
            self.stats.count_injected(counted_as, hit)
        return hit

    def admit(self, endpoint: Endpoint) -> bool:
        """Take an API slot, or refuse (counted as ``limit:<endpoint>``) when all are taken."""
        limit = self.faults.max_inflight
        if limit is not None and self.inflight >= limit:
            self.stats.count_injected(f"limit:{endpoint}", True)
            return False
        self.inflight += 1
        self.stats.max_inflight_seen = max(self.stats.max_inflight_seen, self.inflight)
        return True

    def release(self) -> None:
        """An admitted API request has been answered."""
        self.inflight -= 1

    def draw_slow(self, endpoint: Endpoint) -> float:
        """Seconds to hold this answer back after doing the work (0 for most requests)."""
        rate = self.faults.slow_rate.get(endpoint, 0.0)
        hit = self._draw(rate, f"slow:{endpoint}", f"slow:{endpoint}")
        return self.faults.slow_s if hit else 0.0

    def draw_malformed(self, endpoint: Endpoint) -> bool:
        """Whether this answer is replaced by a 200 whose body breaks the contract."""
        rate = self.faults.malformed_rate.get(endpoint, 0.0)
        return self._draw(rate, f"malformed:{endpoint}", f"malformed:{endpoint}")

    def draw_upload_stall(self) -> float:
        """Seconds this upload pauses in the middle of its body."""
        hit = self._draw(self.faults.stall_upload_rate, "stall_upload", "stall:upload")
        return self.faults.stall_upload_s if hit else 0.0

    def draw_callback_drop(self) -> bool:
        """Whether this job's callback is silently never sent."""
        return self._draw(self.faults.drop_callback_rate, "drop_callback")

    # -- jobs -----------------------------------------------------------------------------

    def create_job(self, mime_type: str, callback_url: str | None) -> Job:
        """A new job awaiting upload; its URL expires ``url_ttl_s`` from now (whole seconds)."""
        expires = int(time.time() + self.faults.url_ttl_s)
        job = Job(str(uuid.uuid4()), mime_type, callback_url, expires)
        self.jobs[job.request_id] = job
        return job

    def url_signature(self, request_id: str, mime_type: str, expires: int) -> str:
        """Hex HMAC-SHA256 binding a pre-signed URL to its job, mimeType and expiry."""
        message = f"{request_id}|{mime_type}|{expires}".encode()
        return hmac.new(self.url_secret, message, hashlib.sha256).hexdigest()

    def get_job(self, request_id: str) -> Job | None:
        """The job, unless unknown or its result outlived ``result_ttl_s``."""
        job = self.jobs.get(request_id)
        if job is not None and self._expired(job):
            del self.jobs[request_id]
            return None
        return job

    def _expired(self, job: Job) -> bool:
        """Results are retained ``result_ttl_s`` after they became final (contract #24)."""
        ttl = self.settings.result_ttl_s
        return (
            ttl is not None
            and job.finished_at is not None
            and time.monotonic() - job.finished_at > ttl
        )

    def job_counts(self) -> dict[PublicStatus, int]:
        """Jobs per public status, after dropping expired results."""
        for request_id in [r for r, j in self.jobs.items() if self._expired(j)]:
            del self.jobs[request_id]
        counts: Counter[PublicStatus] = Counter(j.public_status for j in self.jobs.values())
        return {status: counts[status] for status in ("PENDING", "COMPLETED", "ERROR")}

    def status_polled(self, job: Job) -> None:
        """A get-transcription found ``job``; its first terminal answer feeds the timings."""
        job.status_calls += 1
        timings = self.stats.timings
        if job.observed_at is not None:
            timings.status_calls += 1
        elif job.terminal:
            job.observed_at = time.monotonic()
            timings.observe(job, job.observed_at)

    def is_current(self, job: Job) -> bool:
        """False once a reset has replaced the job table, so stale work is discarded."""
        return self.jobs.get(job.request_id) is job

    def upload_received(self, job: Job, sha256: str, size: int) -> None:
        """Upload done: the job starts processing in the background (contract §1 step 4)."""
        job.begin_processing(sha256, size)
        self.stats.uploads_by_sha256[sha256] += 1
        self.spawn(self._process(job))

    async def _process(self, job: Job) -> None:
        """Delay, decide the outcome, delete the audio, then notify the callback URL."""
        path = self.uploads.path_for(job.request_id)
        try:
            await asyncio.sleep(self._heavy_tail(job) or await self._processing_delay(path))
            await self._decide_outcome(job, path)
        finally:
            self.uploads.delete(job.request_id)
        if self.notifier is not None and self.is_current(job):
            await self.notifier(job)

    def _heavy_tail(self, job: Job) -> float | None:
        """``heavy_tail_s`` for the share of audio the seed picks, so every run slows the same files."""
        share, seed = self.faults.heavy_tail_share, self.faults.seed
        if job.sha256 is None or not in_heavy_tail(job.sha256, share, seed):
            return None
        return self.faults.heavy_tail_s

    async def _processing_delay(self, path: Path) -> float:
        """``processing_rtf`` x the audio's duration when both are known, else the fixed range."""
        rtf = self.faults.processing_rtf
        if rtf is not None:
            duration = await asyncio.to_thread(audio_duration_s, path)
            if duration is not None:
                return duration * self.random("processing_rtf").uniform(*rtf)
        low, high = self.faults.processing_delay_s
        return self.random("processing_delay").uniform(low, high)

    async def _decide_outcome(self, job: Job, path: Path) -> None:
        """Empty audio and injected faults fail before any transcription is attempted."""
        assert job.sha256 is not None
        if job.size == 0:
            job.fail(EMPTY_AUDIO_ERROR)
        elif job.sha256 in self.faults.job_error_sha256 or self._draw_job_error():
            job.fail(INJECTED_ERROR)
        else:
            try:
                segments = await self.transcriber.transcribe(path, job.sha256)
            except TranscriptionFailed as exc:
                job.fail(str(exc))
            except Exception:
                logger.exception("sandbox transcription crashed for %s", job.request_id)
                job.fail(INTERNAL_ERROR)
            else:
                job.complete(segments)

    def _draw_job_error(self) -> bool:
        """Random job failure at ``job_error_rate``."""
        return self._draw(self.faults.job_error_rate, "job_error")

    # -- background tasks and lifecycle ---------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as a task the backend owns, so reset and shutdown can cancel it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """Forget finished tasks and log crashes, which would otherwise vanish silently."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("sandbox background task failed", exc_info=task.exception())

    async def cancel_tasks(self) -> None:
        """Cancel and await every background task."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)

    async def reset(self) -> None:
        """Back to the startup state: no jobs, tokens, stats, callbacks or uploads."""
        await self.cancel_tasks()
        self.jobs.clear()
        self.tokens.clear()
        self.stats = Stats()
        self.callback_log.clear()
        self.uploads.clear()
        self.set_faults(self.settings.faults, reseed=True)

    async def aclose(self) -> None:
        """Shutdown: stop background work, release the transcriber, wipe uploaded audio."""
        await self.cancel_tasks()
        await self.transcriber.aclose()
        self.uploads.close()
