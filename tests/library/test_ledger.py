"""The ledger's claims, transitions, tombstones and URLs, on real SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from invox import ConfigurationError
from invox_batch.ledger import Ledger, Owner, has_password, masked, parse_url
from invox_batch.parameters import StateStorage
from invox_batch.records import ResultRecord, Segment, UploadRecord

from ..postgres import PostgresServer

OpenLedger = Callable[[], Ledger]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_ledger(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> OpenLedger:
    """Fresh ledgers on one database, one per simulated run (each with its own connections)."""
    monkeypatch.setenv("INVOX_LEDGER_LEASE_S", "2")
    url = None
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.new_database()
    return lambda: Ledger.open(tmp_path, None, url)


def _result(request_id: str, text: str = "secret words") -> ResultRecord:
    return ResultRecord(request_id, "COMPLETED", (Segment(0.0, 1.0, text),))


def test_a_live_claim_is_waited_for_and_its_upload_adopted(open_ledger: OpenLedger) -> None:
    first, second = Owner("run-a"), Owner("run-b")
    waited: list[str] = []

    async def main() -> UploadRecord | None:
        async with open_ledger() as a, open_ledger() as b:
            async with a.claim("id1", 0, first) as paid:
                assert paid is None
                other = asyncio.create_task(_claim(b, second, waited))
                await asyncio.sleep(0.5)
                assert not other.done() and waited  # waiting, not paying
                await a.record_intent("upload-id1-g0", "req-1")
                await a.save_upload("id1", 0, UploadRecord("req-1", "t", "run-a"))
            return await asyncio.wait_for(other, 10)

    adopted = asyncio.run(main())
    assert adopted == UploadRecord("req-1", "t", "run-a")
    assert "run-a" in waited[0]


async def _claim(ledger: Ledger, owner: Owner, waited: list[str]) -> UploadRecord | None:
    async with ledger.claim("id1", 0, owner, waited.append) as paid:
        return paid


def test_a_released_or_expired_claim_is_taken_over(open_ledger: OpenLedger) -> None:
    async def main() -> tuple[UploadRecord | None, UploadRecord | None, float]:
        async with open_ledger() as a, open_ledger() as b:
            with pytest.raises(RuntimeError):
                async with a.claim("id2", 0, Owner("run-a")):
                    raise RuntimeError("presign failed")  # released on the way out
            async with b.claim("id2", 0, Owner("run-b")) as released:
                pass
            # A holder that stopped renewing (its machine vanished): only its lease tells.
            assert await a._acquire("id3", 0, Owner("run-c", host="elsewhere"), None) is None
            started = asyncio.get_running_loop().time()
            async with b.claim("id3", 0, Owner("run-d")) as expired:
                waited = asyncio.get_running_loop().time() - started
            return released, expired, waited

    released, expired, waited = asyncio.run(main())
    assert released is None and expired is None
    assert waited < 6  # the 2 s lease ran out (renewals stopped): taken over, not waited forever


def test_forget_leaves_a_tombstone_and_no_text_and_an_upload_lifts_it(
    open_ledger: OpenLedger, tmp_path: Path
) -> None:
    async def main() -> tuple[set[str], int, set[str], str]:
        async with open_ledger() as ledger:
            for identity in ("x", "y"):
                await ledger.save_upload(identity, 0, UploadRecord(f"r-{identity}", "t"))
                await ledger.save_result(identity, 0, _result(f"r-{identity}"))
            removed = await ledger.forget(["x"])
            gone = await ledger.tombstoned(["x", "y", "z"])
            place = (await ledger.locate_all(["x"], 2, False, None))["x"]
            await ledger.save_upload("x", 1, UploadRecord("r-x2", "t"))
            return gone, removed, await ledger.tombstoned(["x"]), place.action

    gone, removed, after, action = asyncio.run(main())
    assert gone == {"x"} and removed == 1 and after == set()
    assert action == "poll"  # its upload is still known: nothing is paid again
    sqlite_file = tmp_path / "ledger.sqlite3"
    if sqlite_file.exists():
        bytes_ = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.sqlite3*"))
        assert bytes_.count(b"secret words") == 1  # y's transcript only


def test_each_transition_is_committed_and_the_schema_is_versioned(tmp_path: Path) -> None:
    async def main() -> None:
        async with Ledger.open(tmp_path) as ledger:
            async with ledger.claim("i", 0, Owner("run")):
                await ledger.record_intent("upload-i-g0", "req")
                assert _state(tmp_path) == "presigned"
                await ledger.save_upload("i", 0, UploadRecord("req", "t"))
            assert _state(tmp_path) == "uploaded"
            await ledger.mark_timeout("i", 0)
            assert _state(tmp_path) == "timeout"
            await ledger.save_result("i", 0, ResultRecord("req", "ERROR"))
            assert _state(tmp_path) == "provider_error"

    asyncio.run(main())
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as conn:
        conn.execute("UPDATE invox_ledger_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(ConfigurationError, match="version 99, newer"):
        asyncio.run(Ledger.open(tmp_path).check())


def _state(folder: Path) -> str:
    with sqlite3.connect(folder / "ledger.sqlite3") as conn:
        return str(conn.execute("SELECT state FROM invox_attempts").fetchone()[0])


def test_urls_pick_the_driver_and_never_show_a_password() -> None:
    target = parse_url("postgresql://u:hunter2@db.example:5433/ledger")
    assert target.url.get_secret_value().startswith("postgresql+asyncpg://u:hunter2@")
    assert "hunter2" not in target.shown and "hunter2" not in repr(target)
    assert target.shared and parse_url("postgres://u@h/d").dialect == "postgresql"
    assert masked("postgresql://u:hunter2@h/d") == "postgresql://u:***@h/d"
    assert has_password("postgresql://u:p@h/d") and not has_password("postgresql://u@h/d")
    for bad, reason in (
        ("mysql://u:hunter2@h/d", "unsupported scheme 'mysql'"),
        ("postgresql://u:hunter2@h", "name the database"),
        ("hunter2", "unsupported scheme none"),
    ):
        with pytest.raises(ConfigurationError, match=reason) as caught:
            parse_url(bad)
        assert "hunter2" not in caught.value.message


def test_the_flow_parameter_refuses_a_password() -> None:
    assert StateStorage(ledger_url="postgresql://u@h:5432/d").ledger_url
    with pytest.raises(ValidationError, match="INVOX_LEDGER_URL") as caught:
        StateStorage(ledger_url="postgresql://u:hunter2@h:5432/d")
    assert "hunter2" not in str(caught.value)
