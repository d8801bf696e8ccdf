"""Per-file steps called directly, the ledger's records, and what a flow run shows in Prefect."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from invox import InvoxClient, InvoxSettings, RateLimitError
from invox_batch.dataset import read_files
from invox_batch.ledger import Ledger, audio_identity, result_key, upload_key
from invox_batch.parameters import Polling, Retrying, Spend
from invox_batch.records import UploadRecord
from invox_batch.settling import Run, Unit, retry_delays
from tasks.settle import _retry_unless_unreachable

from .conftest import SAMPLES
from .flow_helpers import audio_set, run_flow, write_csv_manifest
from .helpers import SandboxControl

WAV = SAMPLES / "visit-001.wav"


def test_a_refused_upload_url_gets_one_fresh_presign(
    settings: InvoxSettings, sandbox: SandboxControl, tmp_path: Path
) -> None:
    import logging

    async def main() -> UploadRecord:
        async with InvoxClient(settings) as client:
            slot = await client.generate_presigned_url("audio/wav")
            tampered = slot.presigned_url[:-4] + "0000"  # the signature no longer matches
            run = Run(
                client,
                Ledger.open(tmp_path / "ledger"),
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


def test_retry_condition_retries_only_what_the_client_marked_retryable() -> None:
    from prefect.states import Failed

    class FirstRun:
        run_count = 1

    rate_limited = Failed(data=RateLimitError("x", status_code=429))
    assert _retry_unless_unreachable(None, FirstRun(), rate_limited)  # type: ignore[arg-type]
    assert not _retry_unless_unreachable(None, FirstRun(), Failed(data=ValueError("bug")))  # type: ignore[arg-type]
    assert retry_delays(5, 1.0, cap_s=5) == [1, 2, 4, 5, 5]


def test_identity_depends_on_content_environment_and_version() -> None:
    base = audio_identity("a" * 64, "https://api", "2025-11-01")
    assert base == audio_identity("a" * 64, "https://api", "2025-11-01")
    assert base != audio_identity("b" * 64, "https://api", "2025-11-01")
    assert base != audio_identity("a" * 64, "https://other", "2025-11-01")
    assert base != audio_identity("a" * 64, "https://api", "2025-10-01")


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_a_run_leaves_progress_table_and_summary_artifacts_without_transcripts(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 3))
    run = run_flow(sandbox, manifest, tmp_path / "out")

    async def artifacts() -> list[Any]:
        async with get_client() as client:
            flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.flow_run_id]))
            return await client.read_artifacts(artifact_filter=flt)

    found = {a.type: a for a in asyncio.run(artifacts())}
    assert set(found) >= {"progress", "table", "markdown"}
    assert float(found["progress"].data) == pytest.approx(100.0)
    assert "3 of 3 files completed" in str(found["markdown"].data)
    table = str(found["table"].data)
    assert "f000" in table and '"text"' not in table
    transcripts = [r["text"] for r in read_files(tmp_path / "out").to_pylist()]
    shown = table + str(found["markdown"].data)
    assert transcripts and not any(t in shown for t in transcripts)


def test_every_flow_parameter_renders_in_the_ui_form_with_a_description() -> None:
    from flows.transcribe_batch import transcribe_batch

    schema = transcribe_batch.parameters.model_dump()
    groups = {"spend", "polling", "retrying", "callbacks", "captions", "scale", "state"}
    assert set(schema["properties"]) == {"manifest", "out", "api_version", *groups}
    assert len(schema["properties"]) <= 10 and schema["required"] == ["manifest"]
    assert all(p.get("description") for p in schema["properties"].values())
    definitions = schema["definitions"]
    fields = {n: f for d in definitions.values() for n, f in d["properties"].items()}
    assert {"max_concurrency", "poll_timeout_s", "force", "callback_url"} <= set(fields)
    assert all(f.get("description") for f in fields.values())
    assert fields["max_concurrency"]["minimum"] == 1


def test_ledger_reads_records_prefect_wrote_and_treats_expired_ones_as_missing(
    tmp_path: Path,
) -> None:
    """Folders written by earlier versions (Prefect's result records) read as they are."""
    import datetime as dt

    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore
    from prefect.serializers import JSONSerializer

    storage = LocalFileSystem(basepath=str(tmp_path))
    writer = ResultStore(result_storage=storage, serializer=JSONSerializer())
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    upload = {"request_id": "r1", "uploaded_at": "2026-01-01T00:00:00+00:00", "flow_run_id": None}
    result = {"request_id": "r1", "status": "COMPLETED", "segments": [[0.0, 1.0, "hi", None]]}
    for identity in ("done", "expired", "broken"):
        writer.write(upload, key=upload_key(identity, 0))
    writer.write({**result, "vtt": None, "error_message": None}, key=result_key("done", 0))
    writer.write(result, key=result_key("expired", 0), expiration=past)
    (tmp_path / result_key("broken", 0)).write_bytes(b"{not json")
    ledger = Ledger(tmp_path)
    places = asyncio.run(ledger.locate_all(["done", "expired", "broken", "absent"], 2, False, None))
    assert [p.action for p in places.values()] == ["done", "poll", "poll", "submit"]
    done = places["done"]
    assert done.upload is not None and done.upload.request_id == "r1"
    assert done.result is not None and done.result.segments[0].text == "hi"
