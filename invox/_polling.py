"""Poll a job until it is terminal: first delay, exponential backoff to a cap, one monotonic deadline."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ._exceptions import InvoxError, PollTimeoutError
from ._models import Transcription

__all__ = ["PollPolicy", "backoff_delay", "next_poll_delay", "poll_until_terminal"]

MIN_DELAY_S = 0.05


@dataclass(frozen=True)
class PollPolicy:
    """How patiently to poll; ``first_delay_s`` is best scaled to the audio's duration."""

    timeout_s: float = 600.0
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.1
    next_delay_s: float | None = None  # delay after the first poll; None: first times multiplier
    # Each later wait is at most this share of the job's age (but may reach ``age_floor_s``), so
    # a job longer than ``age_floor_s / age_share`` gets its result at most that share late
    # (0.25: 25 %); None lets the backoff alone decide.
    age_share: float | None = None
    age_floor_s: float = 0.0  # about the job's expected processing time: no cap below it
    age_at_start_s: float = 0.0  # how long the job had been processing when polling began


def backoff_delay(
    policy: PollPolicy, attempt: int, rand: Callable[[], float] = random.random
) -> float:
    """Delay before poll number ``attempt + 1`` (attempt 0 is the first poll), jittered ±jitter."""
    if attempt == 0:
        base = policy.first_delay_s
    elif policy.next_delay_s is not None:
        base = policy.next_delay_s * policy.multiplier ** (attempt - 1)
    else:
        base = policy.first_delay_s * policy.multiplier**attempt
    base = min(max(base, MIN_DELAY_S if attempt else 0.0), policy.max_delay_s)
    return base * (1 + policy.jitter * (2 * rand() - 1))


def next_poll_delay(
    policy: PollPolicy, attempt: int, age_s: float, rand: Callable[[], float] = random.random
) -> float:
    """The backoff delay after poll ``attempt``, at most ``age_share`` of the job's age ``age_s``
    or ``age_floor_s``, whichever is longer.

    A job still pending at age ``a`` ends after ``a``, so polling again by ``a * (1 + share)``
    delivers its result at most ``share`` late; the floor keeps young jobs on the plain backoff
    (their misses are the first poll's business), so the promise holds for jobs longer than
    ``age_floor_s / share``: the slow ones.
    """
    delay = backoff_delay(policy, attempt, rand)
    if policy.age_share is None or attempt == 0:
        return delay
    return min(delay, max(policy.age_share * age_s, policy.age_floor_s, MIN_DELAY_S))


def _timeout(request_id: str, last_status: str | None, policy: PollPolicy) -> PollTimeoutError:
    """A timeout that says the job is not lost and how to pick it up again."""
    return PollTimeoutError(
        f"transcription {request_id} still {last_status or 'unpolled'} after {policy.timeout_s:g}s; "
        "the audio was accepted, so resume by polling this request id again "
        "(rerun the batch, or raise the poll timeout) instead of uploading it again",
        request_id=request_id,
        last_status=last_status,
    )


async def poll_until_terminal(
    fetch: Callable[[], Awaitable[Transcription]],
    request_id: str,
    policy: PollPolicy = PollPolicy(),
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    on_poll: Callable[[int, str], None] | None = None,
) -> Transcription:
    """Call ``fetch`` until COMPLETED or ERROR; transient errors wait (at least Retry-After) and retry.

    ``on_poll(attempt, status_or_error_type)`` runs after each poll (attempt 1 is the first).
    """
    began = clock()
    deadline = began + policy.timeout_s
    last_status: str | None = None
    wait = backoff_delay(policy, 0)
    attempt = 0
    while True:
        remaining = deadline - clock()
        if remaining <= 0 and attempt:
            raise _timeout(request_id, last_status, policy)
        await sleep(max(0.0, min(wait, remaining)))
        attempt += 1
        polled_at = clock()
        try:
            result = await fetch()
        except InvoxError as exc:
            if not exc.retryable:
                raise
            last_status = exc.error_type
            _notify(on_poll, attempt, last_status)
            wait = max(backoff_delay(policy, attempt), exc.retry_after or 0.0)
            continue
        _notify(on_poll, attempt, result.status)
        if result.is_terminal:
            return result
        last_status = result.status
        hint = min(result.retry_after_s or 0.0, policy.max_delay_s)
        age_s = policy.age_at_start_s + polled_at - began
        wait = max(next_poll_delay(policy, attempt, age_s), hint)


def _notify(on_poll: Callable[[int, str], None] | None, attempt: int, status: str) -> None:
    """Tell the caller what one poll saw."""
    if on_poll is not None:
        on_poll(attempt, status)
