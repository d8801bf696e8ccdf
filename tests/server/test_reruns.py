"""UI reruns, proven on a real Prefect server: a failed run retried in place, then a free rerun."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from ..flow_helpers import audio_set, calls_between, sha256_of, write_csv_manifest
from ..helpers import SandboxControl
from .client import ServerClient

NIGHTLY = "transcribe-batch/nightly"
# Fast polling against the instant sandbox; the first poll after 2 x 0.5 s of audio finds each
# job done, so a job is polled exactly once and re-polling would show in the counts.
FAST = {
    "polling": {"poll_timeout_s": 30.0, "max_poll_interval_s": 0.5, "first_poll_ratio": 2.0},
    "retrying": {"retry_base_delay_s": 0.05},
}


def _batch(folder: Path, count: int, first_seed: int) -> tuple[Path, list[str]]:
    """A manifest of ``count`` fresh WAVs and their sha256 digests."""
    rows = audio_set(folder, count, first_seed=first_seed)
    return write_csv_manifest(folder / "manifest.csv", rows), [
        sha256_of(folder / r["audio_path"]) for r in rows
    ]


def _parts(out: Path) -> list[Path]:
    return sorted((out / "files").glob("run_date=*/*.parquet"))


def _rows_of(part: Path) -> list[dict[str, Any]]:
    return sorted(pq.read_table(part).to_pylist(), key=lambda r: r["row_index"])


def test_ui_retry_redoes_only_failed_files_and_a_scheduled_rerun_is_free(
    server: ServerClient, sandbox: SandboxControl, tmp_path: Path
) -> None:
    manifest, shas = _batch(tmp_path / "audio", 4, first_seed=400)
    out = tmp_path / "out"
    params = {"manifest": str(manifest), "out": str(out), **FAST}

    # 1. Forced provider ERROR on two files: the run ends Failed, the Parquet says which.
    sandbox.faults(job_error_sha256=shas[:2])
    first = server.wait(server.run(NIGHTLY, **params))
    assert first.state is not None and first.state.is_failed(), first.state
    assert "2 of 4 files failed (provider_error=2)" in str(first.state.message)
    [part] = _parts(out)
    assert part.stem == str(first.id)
    assert [r["status"] for r in _rows_of(part)] == ["failed", "failed", "completed", "completed"]
    kinds = {a.type for a in server.artifacts_of(first.id)}
    assert {"table", "markdown", "progress"} <= kinds

    # 2. Faults cleared, the same flow run retried as the UI's Retry does: only the two failed
    # files are paid for again; the run's part file is replaced, and every row is completed.
    sandbox.faults(job_error_sha256=[])
    before = sandbox.stats()
    server.retry_like_ui(first.id)
    retried = server.wait(first.id)
    after = sandbox.stats()
    assert retried.state is not None and retried.state.is_completed(), retried.state
    assert retried.run_count == 2
    calls = calls_between(before, after)
    assert calls == {"token": 1, "presign": 2, "upload": 2, "status": 2}
    assert [after["uploads_by_sha256"].get(s) for s in shas] == [2, 2, 1, 1]
    [part] = _parts(out)
    assert part.stem == str(first.id)
    assert [r["status"] for r in _rows_of(part)] == ["completed"] * 4

    # 3. A fresh scheduled run of the deployment over the same manifest makes zero API calls.
    before = sandbox.stats()
    nightly = server.wait(server.run(NIGHTLY, **params))
    assert nightly.state is not None and nightly.state.is_completed(), nightly.state
    assert calls_between(before, sandbox.stats()) == dict.fromkeys(
        ("token", "presign", "upload", "status"), 0
    )
    assert len(_parts(out)) == 2
    rows = _rows_of(next(p for p in _parts(out) if p.stem == str(nightly.id)))
    assert [(r["status"], r["from_cache"]) for r in rows] == [("completed", True)] * 4


def test_custom_run_parameters_work_and_bad_values_are_refused_by_the_schema(
    server: ServerClient, sandbox: SandboxControl, tmp_path: Path
) -> None:
    manifest, _ = _batch(tmp_path / "other", 2, first_seed=450)
    out = tmp_path / "custom-out"
    run = server.wait(
        server.run(
            NIGHTLY,
            manifest=str(manifest),
            out=str(out),
            scale={"max_concurrency": 2},
            captions={"vtt": True},
            **FAST,
        )
    )
    assert run.state is not None and run.state.is_completed(), run.state
    [part] = _parts(out)
    assert [r["status"] for r in _rows_of(part)] == ["completed", "completed"]
    assert len(list((out / "captions").glob("*.vtt"))) == 2

    runs_before = len(server.runs_of("nightly"))
    bad_values = (
        {"scale": {"max_concurrency": 0}},
        {"scale": {"shard": "two of eight"}},
        {"polling": {"poll_timeout_s": "soon"}},
    )
    for bad in bad_values:
        with pytest.raises(Exception, match=r"(?i)validation") as refused:
            server.run(NIGHTLY, manifest=str(manifest), **bad)
        [group] = bad.values()
        assert next(iter(group)) in str(refused.value)
    assert len(server.runs_of("nightly")) == runs_before  # refused before any run was created
