"""What a flow run shows in Prefect: artifacts without transcripts, and the custom-run form."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ..flow_helpers import audio_set, run_flow, transcripts_of, write_csv_manifest
from ..helpers import SandboxControl


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
    transcripts = [r["text"] for r in transcripts_of(tmp_path / "out").values()]
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
