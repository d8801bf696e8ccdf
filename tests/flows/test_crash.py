"""A run killed with SIGKILL after uploading: the rerun polls the same jobs and uploads nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from invox_batch.dataset import read_files
from sandbox.server import SandboxServer

from ..conftest import ROOT
from ..flow_helpers import (
    audio_set,
    files_of_run,
    recorded_uploads,
    run_flow,
    write_csv_manifest,
)
from ..helpers import SandboxControl, wait_until


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_kill_after_upload_then_rerun_polls_the_same_request_ids(
    sandbox_server: SandboxServer,
    sandbox: SandboxControl,
    tmp_path: Path,
    subprocess_prefect_home: Path,
) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 3))
    out = tmp_path / "out"
    sandbox.faults(processing_delay_s=[4.0, 4.0])  # jobs stay PENDING while we pull the plug
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("INVOX_")},
        "INVOX_BASE_URL": sandbox_server.base_url,
        "INVOX_APP_ID": sandbox_server.settings.app_id,
        "INVOX_API_KEY": sandbox_server.settings.api_key,
        "PREFECT_HOME": str(subprocess_prefect_home),
    }
    command = [sys.executable, "-m", "invox_batch", "run", str(manifest), "--out", str(out)]
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: recorded_uploads(out / ".state", 0) == 3, timeout_s=90, interval_s=0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its ephemeral Prefect server
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "files").exists()  # killed before writing: nothing half-written either
    before = sandbox.stats()
    assert sum(before["uploads_by_sha256"].values()) == 3 and before["jobs"]["PENDING"] == 3

    rerun = run_flow(sandbox, manifest, out)
    assert rerun.state.is_completed(), rerun.summary["error_types"]
    assert rerun.calls["presign"] == 0 and rerun.calls["upload"] == 0
    assert set(sandbox.stats()["uploads_by_sha256"].values()) == {1}
    rows = files_of_run(read_files(out), rerun.flow_run_id)
    assert all(r["status"] == "completed" and not r["from_cache"] for r in rows)
