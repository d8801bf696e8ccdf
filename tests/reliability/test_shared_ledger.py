"""Never pay twice across machines and concurrent runs that share a ledger, with a real PostgreSQL
(started by the session) and real CLI subprocesses, counted by the sandbox's request counters."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from invox_batch.cli import app
from invox_batch.dataset import read_files
from sandbox.server import SandboxServer

from ..conftest import ROOT
from ..flow_helpers import files_of_run, make_wav, run_flow, write_csv_manifest
from ..helpers import SandboxControl, wait_until
from ..postgres import PostgresServer
from .conftest import subprocess_env


def _machine(root: Path, name: str, seeds: range) -> tuple[Path, Path, dict[str, str]]:
    """A "machine": its own HOME, Prefect home, audio copies, manifest and output folder."""
    home = root / name
    audio = home / "audio"
    audio.mkdir(parents=True)
    rows = [
        {"audio_path": make_wav(audio / f"a{n:03d}.wav", 70_000 + n, 0.2).name, "file_id": f"f{n}"}
        for n in seeds
    ]
    manifest = write_csv_manifest(audio / "manifest.csv", rows)
    extra = {"HOME": str(home), "XDG_STATE_HOME": str(home / "state")}
    return manifest, home / "out", extra


def _start(env: dict[str, str], manifest: Path, out: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "invox_batch", "run", str(manifest), "--out", str(out)]
    return subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(proc: subprocess.Popen[str]) -> str:
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-3000:]
    return stdout


def _env(
    server: SandboxServer, api: str, home: Path, extra: dict[str, str], **more: str
) -> dict[str, str]:
    return subprocess_env(server, api, home / "prefect", **extra, **more)


def test_two_machines_sharing_postgresql_pay_once_and_a_third_pays_nothing(
    own_api: SandboxControl,
    own_sandbox: SandboxServer,
    prefect_api_url: str,
    postgres: PostgresServer,
    tmp_path: Path,
) -> None:
    url = postgres.new_database()
    own_api.faults(processing_delay_s=[1.5, 2.0])  # slower than the confirmation window
    first = _machine(tmp_path, "machine-a", range(0, 14))
    second = _machine(tmp_path, "machine-b", range(6, 20))  # 8 files shared with machine-a
    shared = {"INVOX_LEDGER_URL": url, "INVOX_UPLOAD_CONFIRM_S": "0.5"}
    runs = [
        _start(_env(own_sandbox, prefect_api_url, m.parent, x, **shared), m, o)
        for m, o, x in (first, second)
    ]
    for proc in runs:
        _finish(proc)
    stats = own_api.stats()
    assert len(stats["uploads_by_sha256"]) == 20
    assert set(stats["uploads_by_sha256"].values()) == {1}, stats["uploads_by_sha256"]
    assert stats["requests"]["presign"] == 20  # no job opened and left without its audio

    manifest, out, extra = _machine(tmp_path, "machine-c", range(0, 20))
    before = own_api.stats()["requests"]
    env = _env(own_sandbox, prefect_api_url, manifest.parent, extra, INVOX_LEDGER_URL=url)
    stdout = _finish(_start(env, manifest, out))
    assert own_api.stats()["requests"] == before  # not one API call: every file from the ledger
    assert "20 of 20 files completed, 0 failed, 20 from cache" in stdout
    assert url.split("@")[0] not in stdout  # the credential part of the URL is never printed


def test_concurrent_runs_on_one_sqlite_ledger_with_a_slow_provider_pay_once(
    own_api: SandboxControl,
    own_sandbox: SandboxServer,
    prefect_api_url: str,
    tmp_path: Path,
) -> None:
    own_api.faults(processing_delay_s=[2.0, 2.5])  # far beyond INVOX_UPLOAD_CONFIRM_S
    manifest, out, extra = _machine(tmp_path, "machine", range(100, 110))
    env = _env(own_sandbox, prefect_api_url, manifest.parent, extra, INVOX_UPLOAD_CONFIRM_S="0.5")
    runs = [_start(env, manifest, out) for _ in range(2)]
    for proc in runs:
        _finish(proc)
    stats = own_api.stats()
    assert len(stats["uploads_by_sha256"]) == 10
    assert set(stats["uploads_by_sha256"].values()) == {1}, stats["uploads_by_sha256"]
    assert stats["requests"]["presign"] == 10


@pytest.mark.usefixtures("prefect_harness")
def test_postgresql_restarted_mid_run_loses_nothing_and_a_rerun_pays_nothing(
    own_api: SandboxControl,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = postgres.new_database()
    monkeypatch.setenv("INVOX_LEDGER_URL", url)
    own_api.faults(processing_delay_s=[1.0, 1.5], latency_s={"upload": 0.3})
    manifest, out, _ = _machine(tmp_path, "machine", range(200, 212))
    restarted = threading.Event()

    def restart_after_first_uploads() -> None:
        wait_until(lambda: own_api.stats()["requests"].get("upload", 0) >= 3, timeout_s=60)
        postgres.restart()
        restarted.set()

    thread = threading.Thread(target=restart_after_first_uploads, daemon=True)
    thread.start()
    first = run_flow(own_api, manifest, out, max_concurrency=4)
    thread.join(timeout=60)
    assert restarted.is_set()
    rows = files_of_run(read_files(out), first.flow_run_id)
    failed = {r["error_type"] for r in rows if r["status"] != "completed"}
    assert failed <= {"ledger_unavailable"}, failed  # the outage is named, nothing else broke

    rerun = run_flow(own_api, manifest, out)
    assert rerun.state.is_completed(), rerun.summary["error_types"]
    uploads = own_api.stats()["uploads_by_sha256"]
    assert len(uploads) == 12 and set(uploads.values()) == {1}, uploads
    lost = sum(r["status"] != "completed" for r in rows)
    print(
        f"\nPostgreSQL restarted mid-run: {lost} of 12 rows failed, rerun completed, 0 paid twice"
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://invox:{pw}@127.0.0.1:3306/ledger", "unsupported scheme 'mysql'"),
        ("postgresql://invox:{pw}@127.0.0.1:{closed}/ledger", "cannot open the ledger"),
        ("postgresql://postgres:{pw}@127.0.0.1:{port}/postgres", "password authentication failed"),
    ],
    ids=["unknown-scheme", "unreachable", "wrong-password"],
)
@pytest.mark.usefixtures("invox_env")
def test_a_bad_ledger_url_is_one_line_and_exit_2_before_any_call(
    url: str,
    says: str,
    sandbox: SandboxControl,
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ..postgres import _free_port

    password = "Sup3r-s3cret-pw"
    given = url.format(pw=password, closed=_free_port(), port=postgres.port)
    monkeypatch.setenv("INVOX_LEDGER_URL", given)
    manifest, out, _ = _machine(tmp_path, "machine", range(300, 302))
    done = CliRunner().invoke(app, ["run", str(manifest), "--out", str(out)])
    lines = done.output.strip().splitlines()
    assert done.exit_code == 2 and len(lines) == 1, done.output
    assert lines[0].startswith("error: INVOX_LEDGER_URL: ")
    assert says in lines[0] and password not in done.output
    assert sum(sandbox.stats()["requests"].values()) == 0
