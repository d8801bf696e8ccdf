"""Nothing listens at INVOX_BASE_URL: one clear message, every row api_unreachable, exit 1, fast."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from invox_batch.cli import app
from invox_batch.dataset import read_files

from ..flow_helpers import audio_set, recorded_uploads, run_flow, write_csv_manifest
from ..helpers import SandboxControl, clear_env


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _authenticate_attempts(flow_run_id: str) -> int:
    """How many times the up-front token task ran in that flow run (Prefect's own record)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> int:
        async with get_client() as client:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        return sum(r.run_count for r in runs if r.task_key.startswith("authenticate"))

    return asyncio.run(read())


@pytest.mark.usefixtures("prefect_harness")
def test_api_down_for_the_whole_run_fails_every_row_quickly_with_one_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_env(monkeypatch, "INVOX_CACHE_NAMESPACE", "INVOX_API_VERSION")
    monkeypatch.setenv("INVOX_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("INVOX_APP_ID", "app")
    monkeypatch.setenv("INVOX_API_KEY", "key")
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 6))
    out = tmp_path / "out"

    started = time.monotonic()
    done = CliRunner().invoke(app, ["run", str(manifest), "--out", str(out)])
    elapsed = time.monotonic() - started

    print(f"\nAPI down: run ended in {elapsed:.1f} s")
    assert done.exit_code == 1, done.output
    errors = [line for line in done.output.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: token request failed: cannot connect to the API (ConnectError); "
        "check INVOX_BASE_URL and that the server is up"
    ]
    # Prefect's one task-state line may repeat the reason; there is no per-row storm or traceback.
    assert done.output.count("cannot connect") <= 2 and "Traceback" not in done.output
    rows = read_files(out).to_pylist()
    assert len(rows) == 6
    assert {(r["status"], r["error_type"]) for r in rows} == {("failed", "api_unreachable")}
    flow_run_id = rows[0]["flow_run_id"]
    assert _authenticate_attempts(flow_run_id) <= 2  # one retry, not six with backoff
    assert recorded_uploads(out / ".state") == 0 and not list(out.rglob(".*.tmp-*"))


@pytest.mark.usefixtures("prefect_harness")
def test_the_credential_check_retries_on_the_runs_own_schedule(
    own_api: SandboxControl, tmp_path: Path
) -> None:
    """retries=2 means three token attempts up front, not the six retries of a fixed schedule."""
    own_api.faults(rate_503={"token": 1.0})
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 2))

    run = run_flow(own_api, manifest, tmp_path / "out", retries=2, retry_base_delay_s=0.0)

    assert run.state.is_failed()
    assert _authenticate_attempts(run.summary["flow_run_id"]) == 3
    assert own_api.requests("token") == 3 and own_api.requests("presign") == 0
