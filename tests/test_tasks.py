"""Task bodies called directly (``task.fn``) and the artifacts a flow run leaves in Prefect."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from invox import InvoxClient, InvoxSettings, RateLimitError
from invox_batch.dataset import read_files
from tasks.ledger import audio_identity
from tasks.transcription import retry_delays, retry_if_transient, upload, using_client

from .conftest import SAMPLES
from .flow_helpers import audio_set, run_flow, write_csv_manifest
from .helpers import SandboxControl

WAV = SAMPLES / "visit-001.wav"


def test_a_refused_upload_url_gets_one_fresh_presign(
    settings: InvoxSettings, sandbox: SandboxControl
) -> None:
    async def main() -> dict[str, Any]:
        async with InvoxClient(settings) as client:
            slot = await client.generate_presigned_url("audio/wav")
            tampered = slot.presigned_url[:-4] + "0000"  # the signature no longer matches
            with using_client(client):
                return await upload.fn(
                    file_id="visit-001",
                    cache_key="k",
                    path=str(WAV),
                    mime_type="audio/wav",
                    slot={"presigned_url": tampered, "request_id": slot.request_id},
                    callback_url=None,
                )

    record = asyncio.run(main())
    stats = sandbox.stats()
    assert stats["requests"]["presign"] == 2 and stats["responses"]["upload"] == {
        "403": 1,
        "200": 1,
    }
    assert record["request_id"] and record["uploaded_at"]


def test_retry_condition_retries_only_what_the_client_marked_retryable() -> None:
    from prefect.states import Failed

    assert retry_if_transient(None, None, Failed(data=RateLimitError("x", status_code=429)))  # type: ignore[arg-type]
    assert not retry_if_transient(None, None, Failed(data=ValueError("bug")))  # type: ignore[arg-type]
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
    expected = {
        "manifest",
        "out",
        "max_concurrency",
        "poll_timeout_s",
        "force",
        "callback_url",
        "api_version",
    }
    assert expected <= set(schema["properties"]) and schema["required"] == ["manifest"]
    assert all(p.get("description") for p in schema["properties"].values())
    assert schema["properties"]["max_concurrency"]["minimum"] == 1


def test_ledger_reads_records_once_and_treats_expired_or_absent_ones_as_missing(
    tmp_path: Path,
) -> None:
    import datetime as dt

    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore
    from prefect.serializers import JSONSerializer

    from tasks.ledger import Ledger

    storage = LocalFileSystem(basepath=str(tmp_path))
    writer = ResultStore(result_storage=storage, serializer=JSONSerializer())
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    writer.write({"request_id": "r1"}, key="fresh")
    writer.write({"request_id": "r2"}, key="stale", expiration=past)
    (tmp_path / "broken").write_bytes(b"{not json")
    ledger = Ledger(storage)

    async def read_all() -> list[Any]:
        return [await ledger.read(k) for k in ("fresh", "stale", "absent", "broken")]

    assert asyncio.run(read_all()) == [{"request_id": "r1"}, None, None, None]
