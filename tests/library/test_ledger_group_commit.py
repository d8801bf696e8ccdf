"""SQLite's ledger thread commits waiting transactions together, each answered once durable."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from invox_batch.ledger._sqlite import SqliteThread


def _thread(tmp_path: Path) -> tuple[SqliteThread, Path]:
    path = tmp_path / "group.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    return SqliteThread(f"sqlite+aiosqlite:///{path}"), path


def _insert(key: str, then_fail: bool = False) -> Any:
    async def work(conn: Any) -> str:
        await conn.execute(text("INSERT INTO t (k) VALUES (:k)"), {"k": key})
        if then_fail:
            raise ValueError(f"body {key} failed after writing")
        return key

    return work


def _keys(path: Path) -> set[str]:
    """What another connection sees: only committed rows."""
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT k FROM t")}


def test_concurrent_transactions_share_commits_and_each_is_durable_when_answered(
    tmp_path: Path,
) -> None:
    thread, path = _thread(tmp_path)
    commits: list[int] = []
    event.listen(thread._engine, "commit", lambda _: commits.append(1))
    seen_when_answered: list[bool] = []

    async def one(key: str) -> str:
        done: str = await thread.run(_insert(key))
        seen_when_answered.append(key in _keys(path))
        return done

    async def main() -> list[str]:
        try:
            return list(await asyncio.gather(*(one(f"k{n}") for n in range(200))))
        finally:
            await thread.close()

    answers = asyncio.run(main())
    assert answers == [f"k{n}" for n in range(200)]
    assert all(seen_when_answered)
    assert _keys(path) == set(answers)
    assert 1 <= len(commits) < 200  # grouped: fewer commits than transactions


def test_a_failing_body_fails_alone_and_leaves_no_write(tmp_path: Path) -> None:
    thread, path = _thread(tmp_path)

    async def main() -> list[Any]:
        try:
            works = [_insert(f"k{n}", then_fail=n == 7) for n in range(20)]
            return list(
                await asyncio.gather(*(thread.run(w) for w in works), return_exceptions=True)
            )
        finally:
            await thread.close()

    answers = asyncio.run(main())
    failed = [a for a in answers if isinstance(a, BaseException)]
    assert [str(e) for e in failed] == ["body k7 failed after writing"]
    assert _keys(path) == {f"k{n}" for n in range(20) if n != 7}


def test_close_finishes_what_was_queued(tmp_path: Path) -> None:
    thread, path = _thread(tmp_path)

    async def main() -> None:
        pending = [asyncio.ensure_future(thread.run(_insert(f"k{n}"))) for n in range(30)]
        await asyncio.sleep(0)  # all queued before close is asked
        await thread.close()
        assert [await p for p in pending] == [f"k{n}" for n in range(30)]

    asyncio.run(main())
    assert len(_keys(path)) == 30


def test_a_constraint_error_reaches_its_caller(tmp_path: Path) -> None:
    thread, _ = _thread(tmp_path)

    async def main() -> None:
        try:
            await thread.run(_insert("same"))
            with pytest.raises(Exception, match="UNIQUE"):
                await thread.run(_insert("same"))
        finally:
            await thread.close()

    asyncio.run(main())
