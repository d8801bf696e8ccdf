"""SIGKILL at chosen points (presign, after an accepted upload, polling, writing Parquet), then
rerun: every row lands once in the latest run, no audio is uploaded twice, no partial Parquet.

Each seeded iteration adds three new recordings to the manifest (so there is unpaid work to
interrupt), kills a CLI subprocess at the failpoint the seed picks, and reruns it to completion.
The sandbox is never reset, so its upload counts span the whole matrix.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from invox_batch.dataset import read_files
from invox_batch.failpoints import ENV, POINTS
from sandbox.server import SandboxServer

from ..conftest import ROOT
from ..flow_helpers import make_wav, write_csv_manifest
from ..helpers import SandboxControl
from .conftest import subprocess_env

NEW_PER_ITERATION = 3
CI_SEEDS = range(4)
ALL_SEEDS = range(24)


@dataclass
class Matrix:
    """What the iterations share: one output folder, a growing manifest, tallies for the report."""

    root: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    killed: int = 0
    points: dict[str, int] = field(default_factory=dict)
    hidden_temps: int = 0
    ledger_url: str | None = None  # None: the default SQLite ledger in the state folder


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    return Matrix(tmp_path_factory.mktemp("crash-matrix"))


def _plan(seed: int) -> tuple[str, int]:
    """The failpoint and which hit of it kills the process, from the seed alone."""
    rng = random.Random(seed)
    point = POINTS[seed % len(POINTS)]  # every point early, then the seed varies the hit
    # A run writes one Parquet part (its files log; the tables commit through Delta).
    nth = 1 if point == "write_parquet" else rng.randint(1, NEW_PER_ITERATION)
    return point, nth


def _run(env: dict[str, str], manifest: Path, out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "invox_batch", "run", str(manifest), "--out", str(out)]
    return subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )


def _every_visible_parquet_reads(out: Path) -> int:
    """Open every part readers would see; hidden temp files are skipped by every reader."""
    parts = [p for p in out.rglob("*.parquet") if not p.name.startswith(".")]
    for part in parts:
        pq.read_table(part)
    return len(parts)


def _iteration(
    seed: int,
    matrix: Matrix,
    server: SandboxServer,
    prefect_api_url: str,
    prefect_home: Path,
) -> None:
    start = len(matrix.rows)
    matrix.rows += [
        {
            "audio_path": make_wav(matrix.root / f"c{n:03d}.wav", 50_000 + n, 0.2).name,
            "file_id": f"c{n}",
        }
        for n in range(start, start + NEW_PER_ITERATION)
    ]
    manifest = write_csv_manifest(matrix.root / "manifest.csv", matrix.rows)
    out = matrix.root / "out"
    point, nth = _plan(seed)
    base = {
        "INVOX_UPLOAD_CONFIRM_S": "5",
        **({"INVOX_LEDGER_URL": matrix.ledger_url} if matrix.ledger_url else {}),
    }
    crash_env = subprocess_env(
        server, prefect_api_url, prefect_home, **base, **{ENV: f"{point}:{nth}"}
    )

    crashed = _run(crash_env, manifest, out)
    assert crashed.returncode == -signal.SIGKILL, (point, nth, crashed.stderr[-2000:])
    matrix.killed += 1
    matrix.points[point] = matrix.points.get(point, 0) + 1

    rerun = _run(subprocess_env(server, prefect_api_url, prefect_home, **base), manifest, out)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    latest_id = (
        rerun.stdout.split("files:")[1].split()[0].rsplit("/", 1)[1].removesuffix(".parquet")
    )
    latest = [r for r in read_files(out).to_pylist() if r["flow_run_id"] == latest_id]
    assert sorted(r["row_index"] for r in latest) == list(range(len(matrix.rows)))
    assert {r["status"] for r in latest} == {"completed"}
    uploads = SandboxControl(server.base_url).stats()["uploads_by_sha256"]
    assert len(uploads) == len(matrix.rows) and set(uploads.values()) == {1}, uploads
    assert _every_visible_parquet_reads(out) >= 2
    matrix.hidden_temps = len(list(out.rglob(".*.tmp-*")))  # invisible; swept after an hour


def crash_seeds() -> list[Any]:
    """Every seed; those beyond the CI ones run only under make test-all."""
    return [
        pytest.param(s, marks=() if s in CI_SEEDS else pytest.mark.crash_matrix_full)
        for s in ALL_SEEDS
    ]


@pytest.mark.parametrize("seed", crash_seeds())
def test_crash_iteration(
    seed: int,
    matrix: Matrix,
    own_sandbox: SandboxServer,
    prefect_api_url: str,
    subprocess_prefect_home: Path,
) -> None:
    _iteration(seed, matrix, own_sandbox, prefect_api_url, subprocess_prefect_home)
    print(
        f"\ncrash matrix: {matrix.killed} kills {matrix.points}, {len(matrix.rows)} rows, "
        f"0 lost, 0 duplicate uploads, {matrix.hidden_temps} hidden temp files left"
    )
