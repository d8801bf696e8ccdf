"""What a flow run shows in Prefect: artifacts without transcripts, and the custom-run form."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from flows.artifacts import failed_files_markdown, run_key_base
from invox_batch.dataset import read_files

from ..flow_helpers import ARTIFACT_KINDS, audio_set, by_kind, run_flow, write_csv_manifest
from ..helpers import SandboxControl


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_a_run_leaves_keyed_artifacts_without_transcripts_naming_every_failed_file(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    rows = [*audio_set(tmp_path, 3), {"audio_path": "gone.wav", "file_id": "gone", "clinic": "x"}]
    manifest = write_csv_manifest(tmp_path / "m.csv", rows)
    runs = [run_flow(sandbox, manifest, tmp_path / "out") for _ in range(2)]

    async def artifacts(flow_run_id: str) -> list[Any]:
        async with get_client() as client:
            flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
            return await client.read_artifacts(artifact_filter=flt)

    first, second = (by_kind(asyncio.run(artifacts(r.flow_run_id))) for r in runs)
    base = run_key_base(str(manifest), None, None)
    assert {k: a.key for k, a in first.items()} == {k: f"{base}-{k}" for k in ARTIFACT_KINDS}
    assert {a.key for a in first.values()} == {a.key for a in second.values()}  # history
    assert all(re.fullmatch(r"[a-z0-9-]+", str(a.key)) for a in first.values())
    assert float(first["progress"].data) == pytest.approx(100.0)
    assert "3 of 4 files completed" in str(first["summary"].data)
    assert "| gone | file_missing |" in str(first["failed-files"].data)
    table = str(first["files"].data)
    assert "f000" in table and '"text"' not in table
    transcripts = [r["text"] for r in read_files(tmp_path / "out").to_pylist() if r["text"]]
    shown = table + str(first["summary"].data) + str(first["failed-files"].data)
    assert transcripts and not any(t in shown for t in transcripts)


def test_keys_follow_prefects_rule_and_the_failed_list_has_every_file() -> None:
    assert run_key_base("data/x.csv", "nightly", "transcribe-batch") == "transcribe-batch-nightly"
    assert run_key_base("m.csv", "shard", "transcribe-batch", "2/8") == (
        "transcribe-batch-shard-2-of-8"
    )
    local = run_key_base("/data/Nightly Manifest.CSV", None, None)
    assert re.fullmatch(r"invox-batch-nightly-manifest-[0-9a-f]{8}", local)
    assert local != run_key_base("/other/Nightly Manifest.CSV", None, None)
    assert re.fullmatch(r"[a-z0-9-]+", run_key_base("s3://b/é?.jsonl", None, None))
    failed = [{"file_id": f"f{n}", "error_type": "timeout"} for n in range(250)]
    markdown = failed_files_markdown({"rows": 300, "failed_files": failed})
    assert markdown.startswith("# Failed files: 250 of 300")
    assert all(f"| f{n} | timeout |" in markdown for n in range(250))
    assert "No file failed" in failed_files_markdown({"rows": 1, "failed_files": []})


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
