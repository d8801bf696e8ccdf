"""SQLite, the default ledger: its pragmas, and its transactions run whole on one thread.

Through aiosqlite every cursor call is a hand-off to the connection's thread and back: about
sixty per file, 5-6 ms of CPU, which made a 1,000-file run 3 s slower than the JSON records it
replaced. Here a transaction's body runs on one thread against a plain sqlite3 connection, so a
transaction is one hand-off; one thread is also SQLite's own limit (one writer at a time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
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


class SqliteThread:
    """Committed transactions on one thread with its own sqlite3 connection."""

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
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="invox-ledger")

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``work`` in one committed transaction, on the ledger's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._transaction, work)

    def _transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        with self._engine.begin() as connection:
            body = work(cast(AsyncConnection, _Blocking(connection)))
            return _drive(cast(Coroutine[Any, Any, T], body))

    async def close(self) -> None:
        """Let queued transactions finish, then give the connection back."""
        await asyncio.to_thread(self._thread.shutdown, wait=True)
        self._engine.dispose()
