"""The run's slots: ``max_concurrency`` files in flight, handed out in manifest order.

Groups of files (task runs) are labels, not gates: a freed slot goes to the waiting file that
comes first in the manifest, whichever group it belongs to, so a slow job holds its own slot
and nothing else. The executor opens groups ahead of need (``expect``/``until_fewer_expected``),
so there are always files waiting for the next free slot, and few idle task runs.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

__all__ = ["Slots"]


class Slots:
    """At most ``size`` files settle at once; the first waiting file in manifest order goes next."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("Slots needs size >= 1")
        self.size = size
        self.busy = 0
        self._rank: dict[str, int] = {}
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tie = itertools.count()
        self._expected: set[str] = set()
        self._changed: asyncio.Future[None] | None = None

    def rank(self, identities: Sequence[str]) -> None:
        """The manifest order of the run's files (unranked files go first)."""
        self._rank = {identity: n for n, identity in enumerate(identities)}

    @asynccontextmanager
    async def slot(self, identity: str) -> AsyncIterator[None]:
        """Hold one slot while settling ``identity``."""
        await self._acquire(identity)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, identity: str) -> None:
        """Take a free slot, or wait for one in manifest order (the releaser counts it busy)."""
        self._drop_cancelled()
        if self.busy < self.size and not self._waiting:
            self.busy += 1
        else:
            turn = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (self._rank.get(identity, -1), next(self._tie), turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():  # granted, then cancelled before it ran
                    self._release()
                raise
        if identity in self._expected:
            self._expected.discard(identity)
            self._notify()

    def _release(self) -> None:
        """Free a slot and hand it to the first waiting file in manifest order."""
        self.busy -= 1
        while self._waiting and self.busy < self.size:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():
                turn.set_result(None)
                self.busy += 1

    def _drop_cancelled(self) -> None:
        while self._waiting and self._waiting[0][2].done():
            heapq.heappop(self._waiting)

    def expect(self, identities: Iterable[str]) -> None:
        """Files whose group was just opened: counted as waiting until they get a slot."""
        self._expected.update(identities)

    def forget(self, identities: Iterable[str]) -> None:
        """A group ended (even before all its files asked for a slot): stop counting them."""
        self._expected.difference_update(identities)
        self._notify()

    @property
    def expected(self) -> int:
        """Files of open groups that have not had a slot yet."""
        return len(self._expected)

    async def until_fewer_expected(self, count: int) -> None:
        """Return once fewer than ``count`` files of open groups still wait for a slot."""
        while len(self._expected) >= count:
            if self._changed is None:
                self._changed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._changed)

    def _notify(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._changed = None
