"""Adaptive concurrency (AIMD): as many API calls in flight as the server takes without 429s."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Literal

import httpx

__all__ = ["AdaptiveLimiter", "Outcome", "outcome_of", "send_limited"]

Outcome = Literal["ok", "rate_limited", "neutral"]

# Tickets of the slots the current task holds via ``async with limiter`` (innermost last).
_HELD: ContextVar[tuple[int, ...]] = ContextVar("invox_limiter_held", default=())


def outcome_of(status_code: int | None) -> Outcome:
    """Only a 429 means "too many"; 2xx means "room to grow"; anything else teaches nothing."""
    if status_code == 429:
        return "rate_limited"
    if status_code is not None and 200 <= status_code < 300:
        return "ok"
    return "neutral"


class AdaptiveLimiter:
    """Caps requests in flight; +1 per round trip of successes, times beta on a 429 (once per window)."""

    def __init__(
        self, initial: int = 4, ceiling: int = 64, *, beta: float = 0.75, probe: int = 16
    ) -> None:
        if not 1 <= initial <= ceiling or not 0 < beta < 1 or probe < 1:
            raise ValueError(
                "AdaptiveLimiter needs 1 <= initial <= ceiling, 0 < beta < 1, probe >= 1"
            )
        self.ceiling = ceiling
        self.beta = beta
        self.probe = probe
        self._limit = float(initial)
        self._last_drop_at = math.inf
        self._epoch = 0
        self._waiters: deque[asyncio.Future[int]] = deque()
        self.in_flight = 0
        self.decreases = 0
        self.rate_limited = 0
        self.successes = 0

    def __repr__(self) -> str:
        return f"AdaptiveLimiter(limit={self._limit:.2f}, in_flight={self.in_flight})"

    @property
    def limit(self) -> float:
        """Current limit (fractional: it grows by fractions per success)."""
        return self._limit

    @property
    def slots(self) -> int:
        """Requests allowed in flight right now."""
        return max(1, math.floor(self._limit))

    async def acquire(self) -> int:
        """Wait for a slot; the ticket goes back to ``release`` (FIFO, cancellation-safe)."""
        if self.in_flight < self.slots and not self._waiters:
            self.in_flight += 1
            return self._epoch
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result(), "neutral")
            else:
                self._waiters.remove(waiter)
            raise

    def release(self, ticket: int, outcome: Outcome) -> None:
        """Give the slot back and adapt the limit to how the request went."""
        self.in_flight -= 1
        if outcome == "ok":
            self._grow()
        elif outcome == "rate_limited":
            self._shrink(ticket)
        self._wake()

    async def __aenter__(self) -> AdaptiveLimiter:
        ticket = await self.acquire()
        _HELD.set((*_HELD.get(), ticket))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        held = _HELD.get()
        _HELD.set(held[:-1])
        status = 200 if exc is None else getattr(exc, "status_code", None)
        self.release(held[-1], outcome_of(status if isinstance(status, int) else None))

    def _grow(self) -> None:
        """Additive increase: about +1 per round trip below the last 429, slower above it."""
        self.successes += 1
        step = 1 / self._limit
        if self._limit >= self._last_drop_at - 1:
            step /= self.probe
        self._limit = min(float(self.ceiling), self._limit + step)

    def _shrink(self, ticket: int) -> None:
        """Multiplicative decrease, unless the request started before the last decrease."""
        self.rate_limited += 1
        if ticket != self._epoch:
            return
        self._last_drop_at = self._limit
        self._limit = float(max(1, math.floor(self._limit * self.beta)))
        self._epoch += 1
        self.decreases += 1

    def _wake(self) -> None:
        """Hand free slots to waiters in arrival order."""
        while self._waiters and self.in_flight < self.slots:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(self._epoch)


async def send_limited(
    limiter: AdaptiveLimiter | None, send: Callable[[], Awaitable[httpx.Response]]
) -> httpx.Response:
    """Run one HTTP request inside a limiter slot (directly without a limiter, or when the
    caller already holds a slot for the whole exchange, token refresh included)."""
    if limiter is None or _HELD.get():
        return await send()
    ticket = await limiter.acquire()
    outcome: Outcome = "neutral"
    try:
        response = await send()
        outcome = outcome_of(response.status_code)
        return response
    finally:
        limiter.release(ticket, outcome)
