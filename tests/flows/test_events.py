"""Issue 14: one ``invox-batch.file.failed`` event per failed file and one ``run.finished``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flows.events import file_failed, run_finished

from ..flow_helpers import audio_set, invox_events, run_flow, sha256_of, write_csv_manifest
from ..helpers import SandboxControl


def test_the_events_carry_identifiers_and_counts_only() -> None:
    event = file_failed("visit-7", "provider_error")
    assert event["event"] == "invox-batch.file.failed"
    assert event["resource"] == {
        "prefect.resource.id": "invox-batch.file.visit-7",
        "prefect.resource.name": "visit-7",
        "error_type": "provider_error",
        "flow_run_id": "local",
        "deployment": "none",
    }
    summary = {"rows": 3, "completed": 2, "failed": 1, "from_cache": 0, "failed_files": ["x"]}
    finished = run_finished({**summary, "error_types": {"provider_error": 1}})
    assert finished["resource"]["outcome"] == "failed-files"
    assert finished["payload"] == {
        "rows": 3,
        "completed": 2,
        "failed": 1,
        "from_cache": 0,
        "error_types": {"provider_error": 1},
    }


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_a_run_emits_one_event_per_failed_file_and_one_when_it_ends(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    rows = audio_set(tmp_path, 3, first_seed=1500)
    rows.append({"audio_path": "gone.wav", "file_id": "gone", "clinic": "x"})
    manifest = write_csv_manifest(tmp_path / "m.csv", rows)
    sandbox.faults(job_error_sha256=[sha256_of(tmp_path / rows[0]["audio_path"])])
    run = run_flow(sandbox, manifest, tmp_path / "out")
    events = asyncio.run(invox_events(run.flow_run_id))

    failed = sorted(
        (e.resource.id, e.resource["error_type"], e.resource["deployment"])
        for e in events
        if e.event == "invox-batch.file.failed"
    )
    assert failed == [
        ("invox-batch.file.f1500", "provider_error", "none"),
        ("invox-batch.file.gone", "file_missing", "none"),
    ]
    [finished] = [e for e in events if e.event == "invox-batch.run.finished"]
    assert finished.resource.id == f"invox-batch.run.{run.flow_run_id}"
    assert finished.resource["outcome"] == "failed-files"
    assert (finished.payload["rows"], finished.payload["failed"]) == (4, 2)
    related = {r.role for r in finished.related}
    assert "flow-run" in related  # Prefect ties it to the run, so automations can use it
