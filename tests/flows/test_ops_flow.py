"""The flow's operator features end to end: budget cap, captions, quality column, run report."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from invox_batch.budget import plan_units
from invox_batch.cli import app
from invox_batch.dataset import read_files
from invox_batch.ledger import Generation
from invox_batch.settling import Unit

from ..flow_helpers import (
    audio_set,
    by_kind,
    files_of_run,
    retry_flow_run,
    run_flow,
    write_csv_manifest,
)
from ..helpers import SandboxControl

HALF_SECOND_H = 0.5 / 3600  # audio_set makes 0.5 s recordings


def test_only_audio_this_run_would_submit_counts_against_the_cap() -> None:
    units = [Unit(n, n, "p", "audio/wav", 1800.0) for n in ("done", "poll", "new1", "new2")]
    places = {
        "done": Generation(0, "done"),
        "poll": Generation(0, "poll"),
        "new1": Generation(0, "submit"),
        "new2": Generation(0, "submit"),
    }
    plan = plan_units(units, places, 0.6)
    assert plan.skipped == {"new2": "cap"} and plan.submitted_s == 1800.0


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_budget_cap_stops_submitting_and_a_rerun_without_it_pays_only_for_the_rest(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 4))
    out = tmp_path / "out"
    capped = run_flow(sandbox, manifest, out, max_audio_hours=2.5 * HALF_SECOND_H)
    assert capped.state.is_failed() and capped.calls["upload"] == 2
    rows = files_of_run(read_files(out), capped.flow_run_id)
    assert [(r["status"], r["error_type"]) for r in rows] == [
        ("completed", None),
        ("completed", None),
        ("failed", "budget_exceeded"),
        ("failed", "budget_exceeded"),
    ]
    assert "would be exceeded" in rows[2]["error_message"]
    budget = capped.summary["budget"]
    assert budget["not_submitted_files"] == 2
    assert budget["not_submitted_audio_hours"] == pytest.approx(2 * HALF_SECOND_H, abs=1e-4)
    assert budget["cap_hours_left"] == pytest.approx(0.5 * HALF_SECOND_H, abs=1e-4)

    rest = run_flow(sandbox, manifest, out)
    assert rest.state.is_completed() and rest.calls["upload"] == 2
    assert rest.summary["from_cache"] == 2 and rest.summary["budget"] is None


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_captions_quality_and_the_run_report_artifact(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 3))
    out = tmp_path / "out"
    run = run_flow(sandbox, manifest, out, vtt=True, srt=True)
    assert run.state.is_completed(), run.state.message
    for file_id in ("f000", "f001", "f002"):
        assert (out / "captions" / f"{file_id}.vtt").read_text().startswith("WEBVTT")
        assert (out / "captions" / f"{file_id}.srt").read_text().startswith("1\n00:00:00,")
    rows = files_of_run(read_files(out), run.flow_run_id)
    assert all(isinstance(r["quality"], list) for r in rows)
    assert run.summary["quality"] == {}
    page = (out / "reports" / f"{run.flow_run_id}.html").read_text()
    assert page.count('<img class="plot"') == 4 and rows[0]["text"] not in page

    async def artifacts() -> list[Any]:
        async with get_client() as client:
            flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.flow_run_id]))
            return await client.read_artifacts(artifact_filter=flt)

    found = by_kind(asyncio.run(artifacts()))
    assert set(found) == {"progress", "files", "failed-files", "summary"}
    markdown = str(found["summary"].data)
    assert f"# invox-batch report: run `{run.flow_run_id}`" in markdown
    assert f"HTML report with plots: `{(out / 'reports').resolve()}/" in markdown
    assert "3/3 files (100%): 3 completed, 0 failed, 0 in flight" in str(
        found["progress"].description
    )
    assert not any(r["text"] in markdown for r in rows)


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_cli_run_prints_tenth_lines_and_the_budget(sandbox: SandboxControl, tmp_path: Path) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 3))
    args = ["run", str(manifest), "--out", str(tmp_path / "out"), "--srt"]
    done = CliRunner().invoke(app, [*args, "--max-audio-hours", str(2.5 * HALF_SECOND_H)])
    assert done.exit_code == 1, done.output
    progress = [line for line in done.output.splitlines() if line.startswith("progress: ")]
    assert 2 <= len(progress) <= 11 and progress[-1].startswith("progress: 3/3 files (100%)")
    assert "budget: " in done.output and "1 file (0.0001 h) not submitted" in done.output
    assert len(list((tmp_path / "out" / "captions").glob("*.srt"))) == 2

    refused = CliRunner().invoke(app, [*args, "--max-audio-hours", "0"])
    assert refused.exit_code == 2 and "--max-audio-hours" in refused.output


def test_validate_estimates_the_cost(tmp_path: Path) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 2))
    done = CliRunner().invoke(app, ["validate", str(manifest), "--rate-per-hour", "36"])
    assert done.exit_code == 0, done.output
    assert "total audio duration: 0:00:01 (0.00 h) over 2 files" in done.output
    assert "estimated cost: 0.0003 h x 36 per hour = 0.01" in done.output


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_a_retry_of_a_capped_run_does_not_get_a_fresh_cap(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 4, first_seed=710))
    out = tmp_path / "out"
    capped = run_flow(sandbox, manifest, out, max_audio_hours=2.5 * HALF_SECOND_H)
    assert capped.state.is_failed() and capped.calls["upload"] == 2

    retried = retry_flow_run(capped.flow_run_id)
    assert retried.is_failed()  # the two over the cap stay budget_exceeded
    assert sum(sandbox.stats()["uploads_by_sha256"].values()) == 2
    rows = files_of_run(read_files(out), capped.flow_run_id)
    assert [r["error_type"] for r in rows] == [None, None, "budget_exceeded", "budget_exceeded"]


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_a_lost_job_is_submitted_again_only_within_the_cap(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 3, first_seed=720))
    out = tmp_path / "out"
    sandbox.faults(processing_delay_s=[60.0, 60.0])
    pending = run_flow(sandbox, manifest, out, poll_timeout_s=0.3)
    assert pending.summary["error_types"] == {"timeout": 3}
    sandbox.reset()  # the provider forgets the jobs: resuming them answers 404

    capped = run_flow(sandbox, manifest, out, max_audio_hours=1.5 * HALF_SECOND_H)
    assert capped.calls["upload"] == 1
    rows = files_of_run(read_files(out), capped.flow_run_id)
    kinds = sorted(str(r["error_type"]) for r in rows)  # which one fits first is a race
    assert kinds == ["None", "budget_exceeded", "budget_exceeded"]
    assert capped.summary["budget"]["not_submitted_files"] == 2
