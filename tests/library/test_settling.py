"""The per-file steps and the ledger's records, on real files and the sandbox over loopback."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from invox import InvoxClient, InvoxSettings
from invox_batch.ledger import Generation, Ledger, audio_identity, result_key, upload_key
from invox_batch.parameters import Polling, Retrying, Spend
from invox_batch.records import UploadRecord
from invox_batch.settling import Run, Unit

from ..conftest import SAMPLES
from ..helpers import SandboxControl

WAV = SAMPLES / "visit-001.wav"


def test_a_refused_upload_url_gets_one_fresh_presign(
    settings: InvoxSettings, sandbox: SandboxControl, tmp_path: Path
) -> None:
    async def main() -> UploadRecord:
        async with InvoxClient(settings) as client:
            slot = await client.generate_presigned_url("audio/wav")
            tampered = slot.presigned_url[:-4] + "0000"  # the signature no longer matches
            run = Run(
                client,
                Ledger.open(tmp_path),
                spend=Spend(),
                polling=Polling(),
                retrying=Retrying(),
                log=logging.getLogger("test"),
                flow_run_id=None,
            )
            unit = Unit("id", "visit-001", str(WAV), "audio/wav", 1.0)
            return await run._send(unit, "k", (tampered, slot.request_id), fresh_url=False)

    record = asyncio.run(main())
    stats = sandbox.stats()
    assert stats["requests"]["presign"] == 2 and stats["responses"]["upload"] == {
        "403": 1,
        "200": 1,
    }
    assert record.request_id and record.uploaded_at


def test_identity_depends_on_content_environment_and_version() -> None:
    base = audio_identity("a" * 64, "https://api", "2025-11-01")
    assert base == audio_identity("a" * 64, "https://api", "2025-11-01")
    assert base != audio_identity("b" * 64, "https://api", "2025-11-01")
    assert base != audio_identity("a" * 64, "https://other", "2025-11-01")
    assert base != audio_identity("a" * 64, "https://api", "2025-10-01")


def test_ledger_reads_records_prefect_wrote_and_treats_expired_ones_as_missing(
    tmp_path: Path,
) -> None:
    """Folders written by earlier versions (Prefect's result records) are imported on first open."""
    import datetime as dt

    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore
    from prefect.serializers import JSONSerializer

    storage = LocalFileSystem(basepath=str(tmp_path / "results"))
    writer = ResultStore(result_storage=storage, serializer=JSONSerializer())
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    upload = {"request_id": "r1", "uploaded_at": "2026-01-01T00:00:00+00:00", "flow_run_id": None}
    result = {"request_id": "r1", "status": "COMPLETED", "segments": [[0.0, 1.0, "hi", None]]}
    for identity in ("done", "expired", "broken"):
        writer.write(upload, key=upload_key(identity, 0))
    writer.write({**result, "vtt": None, "error_message": None}, key=result_key("done", 0))
    writer.write(result, key=result_key("expired", 0), expiration=past)
    (tmp_path / "results" / result_key("broken", 0)).write_bytes(b"{not json")

    async def locate() -> dict[str, Generation]:
        async with Ledger.open(tmp_path) as ledger:
            return await ledger.locate_all(["done", "expired", "broken", "absent"], 2, False, None)

    places = asyncio.run(locate())
    assert [p.action for p in places.values()] == ["done", "poll", "poll", "submit"]
    done = places["done"]
    assert done.upload is not None and done.upload.request_id == "r1"
    assert done.result is not None and done.result.segments[0].text == "hi"
    assert not (tmp_path / "results").exists()  # imported, then removed: they held transcripts
    assert asyncio.run(locate()) == places  # from the database alone now
