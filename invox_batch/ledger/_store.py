"""The ledger: what earlier runs already paid for, in one transactional table per concept.

Every state transition of an attempt is committed before the next step: claimed → presigned
(request id, as a write-ahead intent) → uploaded → completed | provider_error | timeout. A run
claims (identity, generation) before it presigns; a run meeting another live claim waits for
its upload instead of paying, and a claim whose holder died is taken over, its intents first
asked about at the API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from pydantic import SecretStr
from sqlalchemy import Row, bindparam, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from invox import ConfigurationError, InvoxClient

from ..errors import LedgerUnavailable
from ..files import create_marker, make_dirs, private_files
from ..records import ResultRecord, UploadRecord
from ._landed import confirm_landed
from ._legacy import read_legacy
from ._owner import Owner, alive_here
from ._places import Attempt, Generation, place, upload_key
from ._schema import attempts, intents, migrate, tombstones
from ._sqlite import SqliteThread, sqlite_engine
from ._url import ENV, SQLITE_NAME, LedgerTarget, parse_url

__all__ = ["LEASE_ENV", "Ledger"]

T = TypeVar("T")
LEASE_ENV = "INVOX_LEDGER_LEASE_S"
DEFAULT_LEASE_S = 60.0
_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)  # about 16 s of outage survived per step
_CHUNK = 500
_log = logging.getLogger("invox_batch.ledger")
# aiosqlite logs every statement with its parameters (transcripts) at DEBUG: never let it.
logging.getLogger("aiosqlite").setLevel(logging.WARNING)


def _lease_s() -> float:
    raw = os.environ.get(LEASE_ENV, "").strip()
    if not raw:
        return DEFAULT_LEASE_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigurationError(f"{LEASE_ENV} must be a positive number of seconds")
    return value


def _transient(exc: BaseException) -> bool:
    """A lost or refused connection, a locked file: worth another try, unlike a bad statement."""
    if isinstance(exc, IntegrityError | ProgrammingError | DataError):
        return False
    return isinstance(exc, DBAPIError | OSError | ConnectionError | TimeoutError)


def _reason(exc: BaseException, target: LedgerTarget) -> str:
    """One line about a failure, without the URL's password."""
    message = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else ""
    secret = target.url.get_secret_value()
    password = make_url(secret).password
    if password:
        message = message.replace(password, "***")
    message = message.replace(secret, target.shown)
    detail = f": {message[:200]}" if message else ""
    return f"{type(getattr(exc, 'orig', None) or exc).__name__}{detail}"


def _engine(target: LedgerTarget) -> AsyncEngine:
    url = target.url.get_secret_value()
    if target.dialect == "postgresql":
        return create_async_engine(
            url, pool_size=10, max_overflow=40, connect_args={"timeout": 10}, hide_parameters=True
        )
    return sqlite_engine(url)


def _attempt(row: Row[Any], now: float) -> Attempt:
    upload = UploadRecord(row.request_id, row.uploaded_at or "", row.paid_by)
    result = None
    if row.result is not None and (row.result_expires is None or row.result_expires > now):
        try:
            result = ResultRecord.from_json(json.loads(row.result))
        except (ValueError, TypeError, KeyError):
            result = None
    return Attempt(row.generation, upload, result)


_UPLOADED = ("state", "request_id", "uploaded_at", "paid_by", "lease_until", "updated_at")
_RESULTED = ("state", "result", "result_expires", "updated_at")


class _Statements:
    """The hot path's statements, built once per dialect (parameters bound at execution)."""

    def __init__(self, dialect: str) -> None:
        insert: Any = pg_insert if dialect == "postgresql" else sqlite_insert
        a, pk = attempts.c, ["identity", "generation"]
        self.claim = insert(attempts).on_conflict_do_nothing()
        self.attempt = select(attempts).where(
            a.identity == bindparam("identity"), a.generation == bindparam("generation")
        )
        self.intents_of = (
            select(intents.c.request_id)
            .where(intents.c.key == bindparam("key"))
            .order_by(intents.c.recorded_at)
        )
        self.add_intent = insert(intents).on_conflict_do_nothing()
        self.presigned = (
            update(attempts)
            .where(a.identity == bindparam("b_identity"), a.generation == bindparam("b_generation"))
            .where(a.request_id.is_(None))
            .values(state="presigned", updated_at=bindparam("b_now"))
        )
        upload = insert(attempts)
        self.upload = upload.on_conflict_do_update(
            index_elements=pk, set_={c: upload.excluded[c] for c in _UPLOADED}
        )
        self.untomb = delete(tombstones).where(tombstones.c.identity == bindparam("identity"))
        result = insert(attempts)
        self.result = result.on_conflict_do_update(
            index_elements=pk, set_={c: result.excluded[c] for c in _RESULTED}
        )


class Ledger:
    """The never-pay-twice records in one database, shared by every run that names it."""

    def __init__(
        self,
        target: LedgerTarget,
        cache_expiration: dt.timedelta | None = None,
        *,
        legacy: Path | None = None,
        source: str = ENV,
    ) -> None:
        self.target = target
        self.source = source
        self.cache_expiration = cache_expiration
        self.legacy = legacy
        self.lease_s = _lease_s()
        self._engine: AsyncEngine | None = None
        self._lock: asyncio.Lock | None = None
        self._sqlite: SqliteThread | None = None  # SQLite's transactions, on one thread
        self._sql = _Statements(target.dialect)
        # Intents read with a fresh claim, for the first find_landed: one transaction less.
        self._claimed_intents: dict[str, list[str]] = {}

    @classmethod
    def open(
        cls,
        state_dir: Path,
        cache_expiration: dt.timedelta | None = None,
        url: SecretStr | str | None = None,
        source: str = ENV,
    ) -> Ledger:
        """The ledger ``url`` names, else ``<state>/ledger.sqlite3``; JSON records imported."""
        raw = url.get_secret_value() if isinstance(url, SecretStr) else url
        if raw and raw.strip():
            target = parse_url(raw, source)
        else:
            target = LedgerTarget.sqlite(state_dir / SQLITE_NAME)
        return cls(target, cache_expiration, legacy=state_dir / "results", source=source)

    async def __aenter__(self) -> Ledger:
        await self._ready()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Give the connections back; the ledger reopens on its next use."""
        engine, self._engine = self._engine, None
        sqlite, self._sqlite = self._sqlite, None
        if sqlite is not None:
            await sqlite.close()
        if engine is not None:
            await engine.dispose()

    async def check(self) -> None:
        """Open (schema created or migrated, JSON records imported) and close: fail up front."""
        async with self:
            pass

    async def _ready(self) -> AsyncEngine:
        if self._engine is not None:
            return self._engine
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._engine is None:
                self._engine = await self._connect()
                if self.target.dialect == "sqlite":
                    self._sqlite = SqliteThread(self.target.url.get_secret_value())
        return self._engine

    async def _connect(self) -> AsyncEngine:
        if self.target.dialect == "sqlite":
            path = Path(self.target.shown)
            make_dirs(path.parent)
            if private_files():
                create_marker(path)
        engine = _engine(self.target)
        try:
            await _migrated(engine)
            if self.legacy is not None:
                await self._import(engine, self.legacy)
        except ConfigurationError:
            await engine.dispose()
            raise
        except Exception as exc:
            await engine.dispose()
            raise ConfigurationError(
                f"{self.source}: cannot open the ledger {self.target.shown}: "
                f"{_reason(exc, self.target)}"
            ) from None
        return engine

    async def _import(self, engine: AsyncEngine, folder: Path) -> None:
        """Earlier versions' JSON records, copied in once and then removed (they hold text)."""
        found = await asyncio.to_thread(read_legacy, folder)
        if not found.files:
            return
        now = time.time()
        rows = []
        for (identity, generation), upload in found.uploads.items():
            result, expires = found.results.get((identity, generation), (None, None))
            done = result is not None and result.get("status") == "COMPLETED"
            state = "uploaded" if result is None else "completed" if done else "provider_error"
            rows.append(
                {
                    "identity": identity,
                    "generation": generation,
                    "state": state,
                    "lease_until": 0.0,
                    "request_id": str(upload["request_id"]),
                    "uploaded_at": str(upload.get("uploaded_at") or ""),
                    "paid_by": upload.get("flow_run_id"),
                    "result": None if result is None else json.dumps(result),
                    "result_expires": expires,
                    "updated_at": now,
                }
            )
        noted = [
            {"key": key, "request_id": rid, "recorded_at": now + n * 1e-6}
            for key, ids in found.intents.items()
            for n, rid in enumerate(ids)
        ]
        async with engine.begin() as conn:
            for chunk in _chunks(rows, 200):
                await conn.execute(self._insert(attempts, conn).on_conflict_do_nothing(), chunk)
            for chunk in _chunks(noted, 200):
                await conn.execute(self._insert(intents, conn).on_conflict_do_nothing(), chunk)
        for path in found.files:
            path.unlink(missing_ok=True)
        with suppress(OSError):
            folder.rmdir()
        _log.info("imported %d earlier upload records into the ledger", len(rows))

    def _insert(self, table: Any, conn: AsyncConnection | None = None) -> Any:
        """An INSERT of this dialect, so that ``on_conflict_*`` is at hand."""
        dialect = conn.dialect.name if conn is not None else self.target.dialect
        return pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)

    async def _tx(self, work: Callable[[AsyncConnection], Awaitable[T]], what: str) -> T:
        """``work`` in one committed transaction; a lost connection is tried again for a while."""
        engine = await self._ready()
        for delay in (*_RETRY_DELAYS_S, None):
            try:
                if self._sqlite is not None:
                    return await self._sqlite.run(work)
                async with engine.begin() as conn:
                    return await work(conn)
            except Exception as exc:
                if not _transient(exc):
                    raise
                if delay is None:
                    raise LedgerUnavailable(
                        f"the ledger {self.target.shown} could not {what} "
                        f"({_reason(exc, self.target)}); rerun: nothing paid for is lost"
                    ) from None
                _log.warning("ledger: could not %s; trying again in %.1f s", what, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    # Locating what is known.

    async def locate_all(
        self, identities: Iterable[str], max_resubmits: int, force: bool, flow_run_id: str | None
    ) -> dict[str, Generation]:
        """Where every identity stands, from one read of the uploaded attempts."""
        wanted = list(dict.fromkeys(identities))

        async def read(conn: AsyncConnection) -> list[Row[Any]]:
            found: list[Any] = []
            query = select(
                attempts.c.identity,
                attempts.c.generation,
                attempts.c.request_id,
                attempts.c.uploaded_at,
                attempts.c.paid_by,
                attempts.c.result,
                attempts.c.result_expires,
            ).where(attempts.c.request_id.is_not(None))
            for chunk in _chunks(wanted, _CHUNK):
                result = await conn.execute(query.where(attempts.c.identity.in_(chunk)))
                found.extend(result.all())
            return found

        rows = await self._tx(read, "read the records")
        now = time.time()
        by_identity: dict[str, list[Attempt]] = defaultdict(list)
        for row in rows:
            by_identity[row.identity].append(_attempt(row, now))
        return {i: place(by_identity.get(i, ()), max_resubmits, force, flow_run_id) for i in wanted}

    # Claims.

    @asynccontextmanager
    async def claim(
        self,
        identity: str,
        generation: int,
        owner: Owner,
        on_wait: Callable[[str], None] | None = None,
    ) -> AsyncIterator[UploadRecord | None]:
        """Hold (identity, generation) while paying for it; yields another run's upload instead
        when that run paid first (this one waited for it rather than paying)."""
        adopted = await self._acquire(identity, generation, owner, on_wait)
        if adopted is not None:
            yield adopted
            return
        renewing = asyncio.create_task(self._renew(identity, generation, owner))
        try:
            yield None
        except BaseException:
            renewing.cancel()
            with suppress(Exception):  # the lease runs out anyway if this cannot be said
                await self._release(identity, generation, owner)
            raise
        finally:
            renewing.cancel()

    async def _acquire(
        self,
        identity: str,
        generation: int,
        owner: Owner,
        on_wait: Callable[[str], None] | None,
    ) -> UploadRecord | None:
        delay, told = 0.05, False
        while True:
            now = time.time()
            values = self._claim_values(owner, now)
            insert = partial(self._insert_claim, identity=identity, generation=generation)
            row = await self._tx(partial(insert, values=values), "claim a file")
            if row is None or (row.owner_nonce == owner.nonce and row.request_id is None):
                return None
            if row.request_id is not None:
                return UploadRecord(row.request_id, row.uploaded_at or "", row.paid_by)
            if self._takeable(row, owner, now):
                take = partial(self._take, identity=identity, generation=generation)
                taken = await self._tx(partial(take, values=values, old=row), "take over a claim")
                if taken:
                    return None
                continue
            if on_wait is not None and not told:
                on_wait(
                    f"flow run {row.owner_run or '?'} on {row.owner_host} (pid {row.owner_pid})"
                )
                told = True
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def _claim_values(self, owner: Owner, now: float) -> dict[str, Any]:
        return {
            "state": "claimed",
            "owner_run": owner.flow_run_id,
            "owner_host": owner.host,
            "owner_pid": owner.pid,
            "owner_process": owner.process,
            "owner_nonce": owner.nonce,
            "lease_until": now + self.lease_s,
            "updated_at": now,
        }

    async def _insert_claim(
        self, conn: AsyncConnection, identity: str, generation: int, values: dict[str, Any]
    ) -> Row[Any] | None:
        """None when this insert made the claim; else the row someone else made first."""
        params = {"identity": identity, "generation": generation, **values}
        if (await conn.execute(self._sql.claim, params)).rowcount == 1:
            key = upload_key(identity, generation)
            self._claimed_intents[key] = await self._intended(conn, key)
            return None
        attempt = {"identity": identity, "generation": generation}
        return (await conn.execute(self._sql.attempt, attempt)).first()

    async def _take(
        self,
        conn: AsyncConnection,
        identity: str,
        generation: int,
        values: dict[str, Any],
        old: Row[Any],
    ) -> bool:
        """Take a claim over only if nobody changed it since it was read."""
        stmt = (
            update(attempts)
            .where(attempts.c.identity == identity, attempts.c.generation == generation)
            .where(attempts.c.request_id.is_(None))
            .where(attempts.c.owner_nonce.is_not_distinct_from(old.owner_nonce))
            .where(attempts.c.lease_until == old.lease_until)
            .values(**values)
        )
        if (await conn.execute(stmt)).rowcount != 1:
            return False
        key = upload_key(identity, generation)
        self._claimed_intents[key] = await self._intended(conn, key)
        return True

    @staticmethod
    def _takeable(row: Row[Any], owner: Owner, now: float) -> bool:
        """The holder released it, its lease ran out, or it is certainly dead."""
        if row.lease_until <= now:
            return True
        if alive_here(row.owner_process) is False:
            return True
        same_run = owner.flow_run_id is not None and row.owner_run == owner.flow_run_id
        return same_run and row.owner_process != owner.process  # a retry of this very run

    async def _renew(self, identity: str, generation: int, owner: Owner) -> None:
        """Keep the lease alive while this run works on the file."""
        while True:
            await asyncio.sleep(self.lease_s / 3)

            async def renew(conn: AsyncConnection) -> None:
                now = time.time()
                await conn.execute(
                    update(attempts)
                    .where(attempts.c.identity == identity, attempts.c.generation == generation)
                    .where(attempts.c.owner_nonce == owner.nonce, attempts.c.request_id.is_(None))
                    .values(lease_until=now + self.lease_s, updated_at=now)
                )

            with suppress(LedgerUnavailable):
                await self._tx(renew, "renew a claim")

    async def _release(self, identity: str, generation: int, owner: Owner) -> None:
        """Nothing was uploaded: let the next run take the claim at once."""

        self._claimed_intents.pop(upload_key(identity, generation), None)

        async def release(conn: AsyncConnection) -> None:
            await conn.execute(
                update(attempts)
                .where(attempts.c.identity == identity, attempts.c.generation == generation)
                .where(attempts.c.owner_nonce == owner.nonce, attempts.c.request_id.is_(None))
                .values(lease_until=0.0, updated_at=time.time())
            )

        await self._tx(release, "release a claim")

    # State transitions.

    async def save_upload(self, identity: str, generation: int, record: UploadRecord) -> None:
        """Keep an accepted upload (never expires: that would pay again); lifts a tombstone."""
        params = {
            "identity": identity,
            "generation": generation,
            "state": "uploaded",
            "request_id": record.request_id,
            "uploaded_at": record.uploaded_at,
            "paid_by": record.flow_run_id,
            "lease_until": 0.0,
            "updated_at": time.time(),
        }

        async def save(conn: AsyncConnection) -> None:
            await conn.execute(self._sql.upload, params)
            await conn.execute(self._sql.untomb, {"identity": identity})

        await self._tx(save, "save an upload")

    async def save_result(self, identity: str, generation: int, record: ResultRecord) -> None:
        """Keep a terminal result (forgotten after the cache expiration, if one is set)."""
        now = time.time()
        expiration = self.cache_expiration
        params = {
            "identity": identity,
            "generation": generation,
            "request_id": record.request_id,
            "lease_until": 0.0,
            "state": "completed" if record.completed else "provider_error",
            "result": json.dumps(record.to_json()),
            "result_expires": now + expiration.total_seconds() if expiration else None,
            "updated_at": now,
        }

        async def save(conn: AsyncConnection) -> None:
            await conn.execute(self._sql.result, params)

        await self._tx(save, "save a result")

    async def mark_timeout(self, identity: str, generation: int) -> None:
        """The run stopped waiting for this job; a rerun polls the same request again."""

        async def mark(conn: AsyncConnection) -> None:
            await conn.execute(
                update(attempts)
                .where(attempts.c.identity == identity, attempts.c.generation == generation)
                .where(attempts.c.result.is_(None))
                .values(state="timeout", updated_at=time.time())
            )

        await self._tx(mark, "note a timeout")

    # Write-ahead upload intents.

    async def record_intent(self, key: str, request_id: str) -> None:
        """Keep ``request_id`` durably before its audio is sent (the attempt is now presigned)."""
        identity, _, generation = key.removeprefix("upload-").rpartition("-g")
        now = time.time()

        async def record(conn: AsyncConnection) -> None:
            intent = {"key": key, "request_id": request_id, "recorded_at": now}
            await conn.execute(self._sql.add_intent, intent)
            if generation.isdigit() and key == upload_key(identity, int(generation)):
                state = {"b_identity": identity, "b_generation": int(generation), "b_now": now}
                await conn.execute(self._sql.presigned, state)

        await self._tx(record, "record an upload intent")

    async def forget_intent(self, key: str, request_id: str) -> None:
        """The PUT of ``request_id`` certainly did not land (the server refused it): stop asking."""

        async def forget(conn: AsyncConnection) -> None:
            await conn.execute(
                delete(intents).where(intents.c.key == key, intents.c.request_id == request_id)
            )

        await self._tx(forget, "forget an upload intent")

    async def intended(self, key: str) -> list[str]:
        """Request ids recorded so far under ``key``, oldest first (as read with the claim, the
        first time after it: nobody else records intents under a claim this run holds)."""
        if (known := self._claimed_intents.pop(key, None)) is not None:
            return known
        return await self._tx(partial(self._intended, key=key), "read upload intents")

    async def _intended(self, conn: AsyncConnection, key: str) -> list[str]:
        return [r[0] for r in (await conn.execute(self._sql.intents_of, {"key": key})).all()]

    async def find_landed(self, client: InvoxClient, key: str, grace_s: float) -> str | None:
        """The request id of an earlier attempt whose audio the provider did receive, if any."""
        ids = await self.intended(key)
        for request_id in reversed(ids):
            if await confirm_landed(client, request_id, grace_s / len(ids)):
                return request_id
        return None

    # Forgetting (erasure).

    async def forget(self, identities: Iterable[str]) -> int:
        """Remove these identities' transcripts, leaving a tombstone (identity only, no text);
        their accepted uploads stay, so nothing is paid again. Returns the results removed."""
        wanted = list(dict.fromkeys(identities))
        now = time.time()

        async def forget(conn: AsyncConnection) -> int:
            removed = 0
            for chunk in _chunks(wanted, _CHUNK):
                result = await conn.execute(
                    update(attempts)
                    .where(attempts.c.identity.in_(chunk), attempts.c.result.is_not(None))
                    .values(state="forgotten", result=None, result_expires=None, updated_at=now)
                )
                removed += result.rowcount
                rows = [{"identity": i, "forgotten_at": now} for i in chunk]
                await conn.execute(self._insert(tombstones, conn).on_conflict_do_nothing(), rows)
            return removed

        removed = await self._tx(forget, "forget transcripts")
        await self._compact()
        return removed

    async def _compact(self) -> None:
        """Let no old page keep forgotten text: SQLite's log folded in and the file rebuilt."""
        engine = await self._ready()
        async with engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            if self.target.dialect == "sqlite":
                await auto.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
                await auto.execute(text("VACUUM"))
                await auto.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            else:
                await auto.execute(text(f"VACUUM {attempts.name}"))

    async def tombstoned(self, identities: Iterable[str]) -> set[str]:
        """Which of these identities were forgotten (and not submitted again since)."""
        wanted = list(dict.fromkeys(identities))

        async def read(conn: AsyncConnection) -> set[str]:
            found: set[str] = set()
            for chunk in _chunks(wanted, _CHUNK):
                query = select(tombstones.c.identity).where(tombstones.c.identity.in_(chunk))
                found.update(r[0] for r in (await conn.execute(query)).all())
            return found

        return await self._tx(read, "read tombstones")

    async def count(self) -> int:
        """How many accepted uploads the ledger knows (for reports and tests)."""

        async def read(conn: AsyncConnection) -> int:
            query = select(func.count()).select_from(attempts)
            return int(
                (await conn.execute(query.where(attempts.c.request_id.is_not(None)))).scalar_one()
            )

        return await self._tx(read, "count records")


async def _migrated(engine: AsyncEngine) -> None:
    """The schema made or migrated; a run creating it at the same moment (SQLite has no
    advisory lock) makes this one fail once, then find it there."""
    for delay in (0.1, 0.3, 1.0, None):
        try:
            async with engine.begin() as conn:
                await migrate(conn)
            return
        except (OperationalError, IntegrityError):
            if delay is None:
                raise
            await asyncio.sleep(delay)


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    return (items[n : n + size] for n in range(0, len(items), size))
