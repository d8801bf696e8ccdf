"""The ledger's erasure: records of an identity gone, a text-free tombstone left, then lifted."""

from __future__ import annotations

import asyncio
from pathlib import Path

from invox_batch.ledger import Ledger, tombstone_key
from invox_batch.records import ResultRecord, Segment, UploadRecord


def test_forget_erases_every_record_of_an_identity_and_a_forced_upload_lifts_the_tombstone(
    tmp_path: Path,
) -> None:
    ledger = Ledger.open(tmp_path / "results")
    result = ResultRecord("r1", "COMPLETED", (Segment(0.0, 1.0, "SECRET WORDS"),), vtt="WEBVTT")
    for identity in ("gone", "kept"):
        asyncio.run(ledger.save_upload(identity, 0, UploadRecord("r1", "2026-01-01", "run")))
        asyncio.run(ledger.save_result(identity, 0, result))
    ledger.record_intent("upload-gone-g1", "r2")

    dry = ledger.forget(["gone"], dry_run=True)
    assert (dry.records, dry.request_ids) == (3, frozenset({"r1", "r2"}))
    assert asyncio.run(ledger.tombstoned(["gone"])) == set()

    erased = ledger.forget(["gone"])
    assert erased.records == 3
    names = sorted(p.name for p in ledger.root.iterdir())
    assert names == ["result-kept-g0", tombstone_key("gone"), "upload-kept-g0"]
    assert b"SECRET" not in (ledger.root / tombstone_key("gone")).read_bytes()
    assert asyncio.run(ledger.tombstoned(["gone", "kept"])) == {"gone"}

    asyncio.run(ledger.save_upload("gone", 0, UploadRecord("r3", "2026-02-01", "forced")))
    assert asyncio.run(ledger.tombstoned(["gone"])) == set()
