"""Scale-out on a real Prefect server: a large manifest as shard runs spread over two workers."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from ..flow_helpers import calls_between
from ..helpers import SandboxControl
from .client import ServerClient
from .test_reruns import FAST, NIGHTLY, _batch


def test_shards_spread_over_two_workers_and_a_retried_parent_restarts_no_shard(
    server: ServerClient, sandbox: SandboxControl, tmp_path: Path
) -> None:
    manifest, shas = _batch(tmp_path / "audio", 8, first_seed=500)
    out = tmp_path / "out"
    params = {"manifest": str(manifest), "out": str(out), "scale": {"shard_size": 2}, **FAST}
    shard_runs_before = {r.id for r in server.runs_of("shard")}

    # One file forced to ERROR: its shard fails, so the parent does.
    sandbox.faults(job_error_sha256=[shas[5]])
    parent = server.wait(server.run(NIGHTLY, **params), timeout_s=240)
    assert parent.state is not None and parent.state.is_failed(), parent.state
    assert "1 of 8 files failed" in str(parent.state.message)
    children = {r.id for r in server.runs_of("shard")} - shard_runs_before
    assert len(children) == 4
    # Both workers executed shards (each child records the worker that ran it).
    first = json.loads((out / "runs" / f"{parent.id}.json").read_text())
    hosts = {s["host"] for s in first["shards"]}
    assert hosts == {"worker-a", "worker-b"}, first["shards"]

    # Retried like the UI does: the failed shard is re-armed (not started anew), the others
    # are not run again, and only the one failed file is paid for again.
    sandbox.faults(job_error_sha256=[])
    before = sandbox.stats()
    server.retry_like_ui(parent.id)
    parent = server.wait(parent.id, timeout_s=240)
    assert parent.state is not None and parent.state.is_completed(), parent.state
    assert {r.id for r in server.runs_of("shard")} - shard_runs_before == children
    assert sorted(server.read(c).run_count for c in children) == [1, 1, 1, 2]
    calls = calls_between(before, sandbox.stats())
    assert (calls["presign"], calls["upload"]) == (1, 1)

    summary = json.loads((out / "runs" / f"{parent.id}.json").read_text())
    assert (summary["rows"], summary["completed"], summary["failed"]) == (8, 8, 0)
    assert {s["flow_run_id"] for s in summary["shards"]} == {str(c) for c in children}

    # Each child wrote its own part; their union is the manifest, each row once.
    parts = sorted((out / "files").glob("run_date=*/*.parquet"))
    assert {p.stem for p in parts} == {str(c) for c in children}
    rows = [r for p in parts for r in pq.read_table(p).to_pylist()]
    assert sorted(r["row_index"] for r in rows) == list(range(8))
    assert {r["status"] for r in rows} == {"completed"}
    per_host = [s["host"] for s in first["shards"]]
    print(f"\nshard figures: 8 rows in 4 shards; first pass ran on {per_host}")
