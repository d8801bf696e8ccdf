"""No file waits for another: slow jobs hold their own slots, never their group's other files."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sandbox.models import in_heavy_tail

from ..flow_helpers import audio_set, run_flow, sha256_of, write_csv_manifest
from ..helpers import SandboxControl, wait_until

pytestmark = pytest.mark.usefixtures("prefect_harness", "invox_env")

SHARE, SEED, HOLD_S = 0.1, 35, 15.0


def _all_but_slow_settled(stats: dict[str, Any], files: int, slow: int) -> bool:
    """Every audio uploaded and every job done except the slow ones, still processing."""
    uploaded = sum(stats["uploads_by_sha256"].values())
    jobs = stats["jobs"]
    return uploaded == files and jobs["COMPLETED"] == files - slow and jobs["PENDING"] == slow


def test_slow_jobs_in_two_groups_hold_back_no_other_file(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    rows = audio_set(tmp_path, 24)
    picked = [in_heavy_tail(sha256_of(tmp_path / r["audio_path"]), SHARE, SEED) for r in rows]
    slow = [n for n, is_slow in enumerate(picked) if is_slow]
    # Groups of 4 with 4 slots: the two groups a run used to keep open at once both hold one.
    assert slow == [0, 6]
    sandbox.faults(
        heavy_tail_share=SHARE, heavy_tail_s=HOLD_S, processing_delay_s=[0, 0], seed=SEED
    )
    manifest = write_csv_manifest(tmp_path / "m.csv", rows)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            run_flow, sandbox, manifest, tmp_path / "out", files_per_task=4, max_concurrency=4
        )
        wait_until(
            lambda: _all_but_slow_settled(sandbox.stats(), len(rows), len(slow)),
            timeout_s=HOLD_S - 3,
        )
        run = running.result()
    assert run.state.is_completed(), run.state.message
    assert run.summary["completed"] == len(rows)
