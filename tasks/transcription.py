"""The steps for one audio file (presign, upload, poll) as plain coroutines, and as Prefect tasks.

The flow runs the plain steps (``open_job``, ``send_audio``, ``fetch_result``) inside one
``settle-files`` task run per group of files, retrying each with ``with_retries``, and saves the
ledger records itself. The tasks ``presign``, ``upload`` and ``poll`` wrap the same steps for
flows that want one task run per call. The flow run's single ``InvoxClient`` reaches both
through a context variable, never as a task input (Prefect would try to hash it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from prefect import State, Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run

from invox import (
    APIUnreachableError,
    InvoxClient,
    InvoxError,
    PollPolicy,
    ResponseLostError,
    UploadURLRejectedError,
)
from invox_batch.failpoints import failpoint

from .upload_intents import confirm_landed, find_landed, forget_intent, record_intent

__all__ = [
    "PollObserver",
    "authenticate",
    "current_client",
    "fetch_result",
    "key_from_parameters",
    "open_job",
    "poll",
    "presign",
    "retry_delays",
    "retry_if_transient",
    "retry_unless_unreachable",
    "run_logger",
    "send_audio",
    "upload",
    "using_client",
    "with_retries",
]

_CLIENT: ContextVar[InvoxClient] = ContextVar("invox_client")
T = TypeVar("T")
PollObserver = Callable[[int, str], None]
RETRY_AFTER_CAP_S = 120.0


@contextmanager
def using_client(client: InvoxClient) -> Iterator[InvoxClient]:
    """Make ``client`` the one every task in this context talks through."""
    token = _CLIENT.set(client)
    try:
        yield client
    finally:
        _CLIENT.reset(token)


def current_client() -> InvoxClient:
    """The flow run's client; a task called outside ``using_client`` is a programming error."""
    try:
        return _CLIENT.get()
    except LookupError:
        raise RuntimeError("no InvoxClient in context: call tasks inside using_client()") from None


def retry_if_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry exactly what the client marked retryable (a plain def: Prefect 3.8 needs one)."""
    error = state.data
    return isinstance(error, InvoxError) and error.retryable


def retry_unless_unreachable(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Like ``retry_if_transient``, but a refused connection gets one retry only: an API that is
    down for the run must fail it in seconds, not after minutes of backoff."""
    if isinstance(state.data, APIUnreachableError):
        return task_run.run_count < 2
    return retry_if_transient(task, task_run, state)


def key_from_parameters(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The caller computed the cache key from the audio identity; use it as given."""
    return str(parameters["cache_key"])


def retry_delays(retries: int, base_s: float, cap_s: float = 30.0) -> list[float]:
    """Exponential delays for Prefect's retries: base, 2·base, 4·base… capped."""
    return [min(base_s * 2**n, cap_s) for n in range(retries)]


async def _wait_retry_after(error: InvoxError) -> None:
    """Honour the server's Retry-After before Prefect schedules its own backoff."""
    if error.retryable and error.retry_after:
        await asyncio.sleep(min(error.retry_after, RETRY_AFTER_CAP_S))


def run_logger(
    fallback: str = "invox_batch.tasks",
) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run's logger, or a plain one outside a run (``task.fn``, unit tests, scripts)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(fallback)


async def with_retries(
    step: Callable[[int], Awaitable[T]],
    *,
    retries: int,
    delays: Sequence[float],
    jitter: float = 0.5,
    what: str = "call",
) -> T:
    """Run ``step(attempt)`` again after errors the client marked retryable, as task retries do.

    The per-file steps run inside one task run per batch of files, so each step retries on its
    own instead of Prefect retrying the whole batch.
    """
    attempt = 0
    while True:
        try:
            return await step(attempt)
        except InvoxError as exc:
            if not exc.retryable or attempt >= retries:
                raise
            delay = delays[min(attempt, len(delays) - 1)] if delays else 0.0
            delay *= random.uniform(1 - jitter, 1 + jitter)
            attempt += 1
            run_logger().warning(
                "%s failed (%s); retry %d of %d in %.1f s",
                what,
                exc.error_type,
                attempt,
                retries,
                delay,
            )
            await asyncio.sleep(delay)


def _is_retry() -> bool:
    """True when Prefect is running this task again after a failed attempt."""
    context = TaskRunContext.get()
    return context is not None and context.task_run.run_count > 1


def _now() -> str:
    """UTC now as ISO 8601, the form records are stored in."""
    return dt.datetime.now(dt.UTC).isoformat()


_RETRYING: dict[str, Any] = {
    "retries": 6,
    "retry_delay_seconds": retry_delays(6, 1.0),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_transient,
}


@task(
    name="authenticate",
    cache_policy=NO_CACHE,
    persist_result=False,
    **{**_RETRYING, "retry_condition_fn": retry_unless_unreachable},
)
async def authenticate() -> None:
    """Check the credential once before any upload, so a bad key fails the run, not every row."""
    try:
        await current_client().authenticate()
    except InvoxError as exc:
        await _wait_retry_after(exc)
        raise


@task(
    name="presign",
    task_run_name="presign[{file_id}]",
    cache_policy=NO_CACHE,
    persist_result=False,
    **_RETRYING,
)
async def presign(file_id: str, mime_type: str, callback_url: str | None) -> dict[str, str]:
    """Open a job for one file: a one-shot upload URL and its request id (never persisted)."""
    return await open_job(file_id, mime_type, callback_url)


async def open_job(file_id: str, mime_type: str, callback_url: str | None) -> dict[str, str]:
    """The ``presign`` step as a plain coroutine: one API call, Retry-After waited on failure."""
    try:
        slot = await current_client().generate_presigned_url(mime_type, callback_url)
    except InvoxError as exc:
        await _wait_retry_after(exc)
        raise
    failpoint("presign")
    run_logger().debug("presigned %s as request %s", file_id, slot.request_id)
    return {"presigned_url": slot.presigned_url, "request_id": slot.request_id}


@task(
    name="upload",
    task_run_name="upload[{file_id}]",
    cache_key_fn=key_from_parameters,
    persist_result=True,
    result_serializer="json",
    **_RETRYING,
)
async def upload(
    file_id: str,
    cache_key: str,
    path: str,
    mime_type: str,
    slot: dict[str, str],
    callback_url: str | None,
) -> dict[str, str | None]:
    """PUT the audio; a refused URL (expired, altered) gets one fresh presign and a second PUT."""
    return await send_audio(
        file_id, cache_key, path, mime_type, slot, callback_url, fresh_url=_is_retry()
    )


async def send_audio(
    file_id: str,
    cache_key: str,
    path: str,
    mime_type: str,
    slot: dict[str, str],
    callback_url: str | None,
    *,
    fresh_url: bool = False,
) -> dict[str, str | None]:
    """The ``upload`` step as a plain coroutine; ``fresh_url`` after an earlier failed attempt."""
    client = current_client()
    url, request_id = slot["presigned_url"], slot["request_id"]
    grace = client.settings.upload_confirm_s
    landed = await find_landed(client, cache_key, grace)
    if landed is not None:  # an earlier attempt's audio arrived but its record was never saved
        run_logger().warning(
            "%s was already received as request %s; not uploading again", file_id, landed
        )
        return _upload_record(landed)
    try:
        if fresh_url:  # contract §10 #14: never reuse an upload URL after a failed PUT
            fresh_slot = await client.generate_presigned_url(mime_type, callback_url)
            url, request_id = fresh_slot.presigned_url, fresh_slot.request_id
        try:
            await _put(client, cache_key, url, request_id, path, mime_type)
        except UploadURLRejectedError:
            run_logger().warning("upload URL for %s refused; requesting a fresh one", file_id)
            fresh = await client.generate_presigned_url(mime_type, callback_url)
            await _put(client, cache_key, fresh.presigned_url, fresh.request_id, path, mime_type)
            request_id = fresh.request_id
    except InvoxError as exc:
        await _wait_retry_after(exc)
        raise
    failpoint("upload")  # accepted by the provider, record not yet saved: the riskiest instant
    run_logger().info("uploaded %s as request %s", file_id, request_id)
    return _upload_record(request_id)


def _upload_record(request_id: str) -> dict[str, str | None]:
    """What the ledger keeps about an accepted upload."""
    paid_by = str(flow_run.id) if flow_run.id else None
    return {"request_id": request_id, "uploaded_at": _now(), "flow_run_id": paid_by}


async def _put(
    client: InvoxClient, cache_key: str, url: str, request_id: str, path: str, mime_type: str
) -> None:
    """One PUT, announced first; a lost answer is settled by asking the API, not by a re-upload."""
    record_intent(cache_key, request_id)
    try:
        await client.upload(url, path, mime_type)
    except ResponseLostError:
        if not await confirm_landed(client, request_id, client.settings.upload_confirm_s):
            forget_intent(cache_key, request_id)  # judged not received: the retry uploads anew
            raise
        run_logger().warning("upload answer lost, but request %s received the audio", request_id)
    except (InvoxError, OSError):
        forget_intent(cache_key, request_id)  # refused or never sent: nothing to confirm later
        raise


@task(
    name="poll",
    task_run_name="poll[{file_id}]",
    cache_key_fn=key_from_parameters,
    persist_result=True,
    result_serializer="json",
)
async def poll(file_id: str, cache_key: str, request_id: str, policy: PollPolicy) -> dict[str, Any]:
    """Wait for the job to end; only a terminal result is persisted, so a timeout resumes later."""
    return await fetch_result(file_id, request_id, policy)


async def fetch_result(
    file_id: str, request_id: str, policy: PollPolicy, on_poll: PollObserver | None = None
) -> dict[str, Any]:
    """The ``poll`` step as a plain coroutine: the terminal result as the ledger keeps it."""
    failpoint("poll")
    result = await current_client().wait_for_transcription(request_id, policy, on_poll=on_poll)
    run_logger().info("%s ended %s (request %s)", file_id, result.status, request_id)
    return {
        "request_id": request_id,
        "status": result.status,
        "segments": [[s.start, s.end, s.text, s.speaker] for s in result.segments],
        "vtt": result.vtt,
        "error_message": result.error_message,
        "completed_at": _now(),
    }
