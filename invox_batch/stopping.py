"""Stopping a run on request (a signal): no new file starts, uploads in flight finish and are
recorded, polls are abandoned (the accepted upload is on record, so a rerun resumes it), nothing
is written, and the operator is told how to resume.

A :class:`Stop` is asked for from any thread (the CLI's signal handler runs on the main thread
while the flow runs on its own loop) and awaited on the run's event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

__all__ = [
    "STOP_GRACE_S",
    "Stop",
    "Stopped",
    "current_stop",
    "exit_status",
    "resume_line",
    "stop_scope",
    "until_stopped",
]

T = TypeVar("T")

# How long uploads in flight may take to reach their record once a stop is asked for; what is
# still running then is abandoned (safe: every PUT is announced in an upload intent first).
STOP_GRACE_S = 4.0


class Stop:
    """A stop asked for from any thread; awaited on one event loop, where steps are counted."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._lock = threading.RLock()  # re-entrant: a signal handler may interrupt its holder
        self._wakers: list[Callable[[], None]] = []
        self._in_flight = 0
        self._idle: asyncio.Event | None = None

    @property
    def requested(self) -> bool:
        """True once a stop was asked for."""
        return self.reason is not None

    def request(self, reason: str) -> None:
        """Ask for a stop (safe from a signal handler or another thread); the first reason stays."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    async def wait(self) -> None:
        """Return once a stop is asked for."""
        loop = asyncio.get_running_loop()
        asked: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not asked.done():
                asked.set_result(None)

        def wake() -> None:
            with suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
                loop.call_soon_threadsafe(settle)

        with self._lock:
            if self.reason is not None:
                return
            self._wakers.append(wake)
        try:
            await asked
        finally:
            with self._lock:
                if wake in self._wakers:
                    self._wakers.remove(wake)

    async def admit(self) -> None:
        """Return at once, unless a stop was asked for: then a new file never starts (it waits
        here until the stop cancels it)."""
        if self.requested:
            await asyncio.Event().wait()

    @contextmanager
    def step(self) -> Iterator[None]:
        """A step a stop lets finish (within the grace), such as an upload and its record."""
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight and self._idle is not None:
                self._idle.set()

    async def idle(self) -> None:
        """Return once no step is in flight."""
        while self._in_flight:
            self._idle = asyncio.Event()
            await self._idle.wait()


class Stopped(Exception):
    """The run stopped on request before every file settled; the message says how to resume."""

    def __init__(self, reason: str, settled: int | None = None, total: int | None = None) -> None:
        self.reason, self.settled, self.total = reason, settled, total
        super().__init__(resume_line(reason, settled, total))


def resume_line(reason: str, settled: int | None, total: int | None) -> str:
    """The one line an operator reads after a stop: how far it got and how to go on."""
    progress = f"{settled} of {total} files settled" if total is not None else "no file settled"
    return f"stopped by {reason}: {progress}; rerun the same command to resume"


def exit_status(signum: int) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number."""
    return 128 + signum


async def until_stopped(work: Coroutine[Any, Any, T], stop: Stop, grace_s: float) -> T:
    """``work``'s result; after a stop, ``work`` gets until its steps finish (at most
    ``grace_s``), then it is cancelled and :class:`Stopped` is raised."""
    task = asyncio.ensure_future(work)
    asked = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, asked}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            idle = asyncio.ensure_future(stop.idle())
            await asyncio.wait({task, idle}, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
            idle.cancel()
    finally:
        asked.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise Stopped(stop.reason or "request")
    return task.result()


_current = Stop()  # never asked for outside a stop_scope


def current_stop() -> Stop:
    """The stop this process's signal handling asks for (one run at a time per process)."""
    return _current


@contextmanager
def stop_scope() -> Iterator[Stop]:
    """A fresh stop for the runs inside the block (the CLI's run), then a never-asked one."""
    global _current
    _current = Stop()
    try:
        yield _current
    finally:
        _current = Stop()
