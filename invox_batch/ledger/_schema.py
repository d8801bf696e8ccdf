"""The ledger's tables, created on first use and versioned so that later changes migrate.

``invox_attempts`` holds one row per (identity, generation): its claim (owner and lease), its
state (claimed → presigned → uploaded → completed | provider_error | timeout), the accepted
request id and the terminal result. ``invox_upload_intents`` keeps every presigned request id
before its PUT; ``invox_tombstones`` the identities whose transcripts were forgotten.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from invox import ConfigurationError

__all__ = ["SCHEMA_VERSION", "attempts", "intents", "meta", "migrate", "tombstones"]

SCHEMA_VERSION = 1
_LOCK_ID = 0x1E06E5  # PostgreSQL advisory lock: one migrating process at a time

metadata = MetaData()

meta = Table(
    "invox_ledger_meta",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)

attempts = Table(
    "invox_attempts",
    metadata,
    Column("identity", String(64), primary_key=True),
    Column("generation", Integer, primary_key=True, autoincrement=False),
    Column("state", String(20), nullable=False),
    Column("owner_run", String(64)),
    Column("owner_host", String(255)),
    Column("owner_pid", Integer),
    Column("owner_process", String(255)),  # where its liveness can be checked (node/pid/start)
    Column("owner_nonce", String(32)),
    Column("lease_until", Float, nullable=False, default=0.0),
    Column("request_id", String(255)),  # the accepted upload's request id
    Column("uploaded_at", String(40)),
    Column("paid_by", String(64)),  # the flow run that paid for the upload
    Column("result", Text),  # the terminal result record as JSON
    Column("result_expires", Float),
    Column("updated_at", Float, nullable=False),
)

intents = Table(
    "invox_upload_intents",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("request_id", String(255), primary_key=True),
    Column("recorded_at", Float, nullable=False),
)

tombstones = Table(
    "invox_tombstones",
    metadata,
    Column("identity", String(64), primary_key=True),
    Column("forgotten_at", Float, nullable=False),
)

Migration = Callable[[AsyncConnection], Awaitable[None]]
# version n → n + 1; add one entry per schema change, never edit a released one.
MIGRATIONS: dict[int, Migration] = {}


async def _version(conn: AsyncConnection) -> int | None:
    row = (await conn.execute(select(meta.c.value).where(meta.c.key == "schema_version"))).first()
    return int(row[0]) if row else None


async def migrate(conn: AsyncConnection) -> None:
    """Create the tables on first use, or bring an older schema up to ``SCHEMA_VERSION``."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
    await conn.run_sync(lambda sync: meta.create(sync, checkfirst=True))
    version = await _version(conn)
    if version is None:
        await conn.run_sync(lambda sync: metadata.create_all(sync, checkfirst=True))
        await conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
        return
    if version > SCHEMA_VERSION:
        raise ConfigurationError(
            f"the ledger's schema is version {version}, newer than this invox-batch knows "
            f"({SCHEMA_VERSION}): upgrade invox-batch"
        )
    while version < SCHEMA_VERSION:
        await MIGRATIONS[version](conn)
        version += 1
    await conn.execute(
        meta.update().where(meta.c.key == "schema_version").values(value=str(version))
    )
