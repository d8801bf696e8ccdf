"""SQLite, the default ledger: its pragmas, and its transactions run whole on one thread.

Through aiosqlite every cursor call is a hand-off to the connection's thread and back: about
sixty per file, 5-6 ms of CPU, which made a 1,000-file run 3 s slower than the JSON records it
replaced. Here a transaction's body runs on one thread against a plain sqlite3 connection, so a
transaction is one hand-off; one thread is also SQLite's own limit (one writer at a time).

The transactions waiting when the thread comes round commit together (group commit): each still
answers only once it is durable, but sixteen files in flight share one fsync instead of queueing
for one each (a commit is about 1 ms, and four per file made the thread the run's bottleneck).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from typing import Any, TypeVar, cast

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

__all__ = ["SqliteThread", "sqlite_engine"]

T = TypeVar("T")
_PRAGMAS = (
    "journal_mode=WAL",
    "busy_timeout=30000",
    "synchronous=FULL",
    "secure_delete=ON",  # forgotten transcripts do not linger in free pages
)


def _pragmas(connection: Any, _: Any) -> None:
    cursor = connection.cursor()
    for pragma in _PRAGMAS:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def sqlite_engine(url: str) -> AsyncEngine:
    """The async engine for schema work, imports and compaction (rare, whole-file steps)."""
    engine = create_async_engine(
        url, connect_args={"timeout": 30}, pool_size=10, max_overflow=40, hide_parameters=True
    )
    event.listen(engine.sync_engine, "connect", _pragmas)
    return engine


class _Blocking:
    """A sync connection behind AsyncConnection's ``execute``: the transaction bodies are
    written once, for both databases, and here they never really wait."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.dialect = connection.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self._connection.execute(statement, parameters)


def _drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends (it awaits only ``_Blocking``)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coroutine.close()
    raise RuntimeError("a ledger transaction waited on something other than its database")


Work = Callable[[AsyncConnection], Awaitable[Any]]
_Job = tuple[Work, "asyncio.Future[Any]", asyncio.AbstractEventLoop]
_Answer = tuple["asyncio.Future[Any]", bool, Any]  # the future, whether it succeeded, its value
GROUP_MAX = 64  # transactions committed together at most


def _answer(answers: list[_Answer]) -> None:
    """On the caller's loop: each waiting ``run`` gets its result or its exception."""
    for future, ok, value in answers:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class SqliteThread:
    """Committed transactions on one thread with its own sqlite3 connection, grouped."""

    def __init__(self, url: str) -> None:
        plain = make_url(url).set(drivername="sqlite")
        self._engine: Engine = create_engine(
            plain,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=1,
            max_overflow=0,
            hide_parameters=True,
        )
        event.listen(self._engine, "connect", _pragmas)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="invox-ledger", daemon=True)
        self._thread.start()

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``work`` committed (perhaps with others' transactions), on the ledger's thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((work, future, loop))
        return await future

    def _serve(self) -> None:
        """Commit what waits, in groups, until ``close``."""
        while (first := self._jobs.get()) is not None:
            group, stop = [first], False
            while len(group) < GROUP_MAX and not stop:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                stop = job is None
                group += [job] if job is not None else []
            self._commit(group)
            if stop:
                return

    def _commit(self, group: list[_Job]) -> None:
        """One transaction for the group; if any body fails, each runs again on its own, so one
        failure is that caller's alone (the others' writes were rolled back with it)."""
        try:
            with self._engine.begin() as connection:
                done = [(job, True, self._body(job[0], connection)) for job in group]
        except Exception as exc:
            if len(group) > 1:
                for job in group:
                    self._commit([job])
                return
            done = [(group[0], False, exc)]
        by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
        for (_, future, loop), ok, value in done:
            by_loop.setdefault(loop, []).append((future, ok, value))
        for loop, answers in by_loop.items():
            with suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_answer, answers)

    @staticmethod
    def _body(work: Work, connection: Connection) -> Any:
        body = work(cast(AsyncConnection, _Blocking(connection)))
        return _drive(cast(Coroutine[Any, Any, Any], body))

    async def close(self) -> None:
        """Let queued transactions finish, then give the connection back."""
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        self._engine.dispose()
