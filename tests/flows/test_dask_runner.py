"""task_runner="dask": files settled as tasks on a prefect-dask LocalCluster, never paid twice."""

from __future__ import annotations

import asyncio
from pathlib import Path
from uuid import UUID

import pytest

from invox_batch.dataset import read_files

from ..flow_helpers import audio_set, files_of_run, retry_flow_run, run_flow, write_csv_manifest
from ..helpers import SandboxControl

pytestmark = pytest.mark.usefixtures("prefect_harness", "invox_env")


def _settle_task_runs(flow_run_id: str) -> int:
    """How many ``settle`` task runs (the Dask-submitted ones) a flow run has."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def count() -> int:
        async with get_client() as client:
            only = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
            runs = await client.read_task_runs(flow_run_filter=only)
        return sum(run.name.startswith("settle") for run in runs)

    return asyncio.run(count())


def test_dask_mode_completes_every_row_and_a_rerun_uploads_nothing(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    rows = audio_set(tmp_path / "audio", 5, first_seed=600)
    rows.append({**rows[0], "file_id": "same-audio-again"})  # one identity, two rows
    manifest = write_csv_manifest(tmp_path / "audio" / "manifest.csv", rows)
    out = tmp_path / "out"
    sandbox.faults(job_error_rate=1.0)  # every job fails first: the retry must redo them all
    first = run_flow(sandbox, manifest, out, task_runner="dask", max_concurrency=3)
    assert first.state.is_failed() and first.summary["failed"] == 6
    assert (first.calls["presign"], first.calls["upload"]) == (5, 5)
    assert _settle_task_runs(first.flow_run_id) == 5  # one Dask task per unique audio

    sandbox.faults(job_error_rate=0.0)
    retried = retry_flow_run(first.flow_run_id)
    assert retried.is_completed(), retried.message
    rows_out = files_of_run(read_files(out), first.flow_run_id)
    assert [r["status"] for r in rows_out] == ["completed"] * 6
    assert sorted(sandbox.stats()["uploads_by_sha256"].values()) == [2] * 5

    again = run_flow(sandbox, manifest, out, task_runner="dask")
    assert again.state.is_completed(), again.state.message
    assert again.calls == {"token": 0, "presign": 0, "upload": 0, "status": 0}
    assert again.summary["from_cache"] == 6


def test_dask_mode_checks_the_credential_once_before_sending_anything_to_the_cluster(
    sandbox: SandboxControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 3, first_seed=640))
    monkeypatch.setenv("INVOX_API_KEY", "not-the-key")
    run = run_flow(sandbox, manifest, tmp_path / "out", task_runner="dask", retries=0)
    assert run.summary["fatal_error_type"] == "unauthorized"
    assert run.calls == {"token": 1, "presign": 0, "upload": 0, "status": 0}
    assert run.summary["error_types"] == {"unauthorized": 3}
    assert _settle_task_runs(run.flow_run_id) == 0
