"""SIGTERM and Ctrl-C on a real ``invox-batch run``: out within 10 s, one line saying how to
resume, exit 130/143, the flow run Cancelled, nothing written, and a rerun pays nothing twice."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from invox_batch.stopping import STOP_GRACE_S
from sandbox.server import SandboxServer

from ..conftest import ROOT, SAMPLES
from ..flow_helpers import recorded_intents, recorded_uploads
from ..helpers import SandboxControl, wait_until
from .test_orphans import SERVER_APP, _alive, _children, _cmdline

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

RESUME = re.compile(
    r"^stopped by (SIGINT|SIGTERM): \d+ of \d+ files settled; rerun the same command to resume$"
)
RUN = [sys.executable, "-m", "invox_batch", "run", str(SAMPLES / "manifest.csv")]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVOX_", "PREFECT_API"))}
    return {**env, "PREFECT_HOME": str(home), **extra}


def _start(out: Path, env: dict[str, str], err: Path) -> subprocess.Popen[bytes]:
    """The CLI in a session of its own, as a terminal runs it (Ctrl-C reaches the group)."""
    with err.open("wb") as stderr:
        return subprocess.Popen(
            [*RUN, "--out", str(out), "--concurrency", "2"],
            cwd=ROOT,
            env=env,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,
        )


def _start_a_stalled_upload(
    tmp_path: Path, home: Path
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """The CLI with its first upload announced and its body stalled: in flight past the grace."""
    env = _env(
        home,
        INVOX_SANDBOX_PROCESSING="instant",
        INVOX_SANDBOX_FAULTS__STALL_UPLOAD_RATE="1",
        INVOX_SANDBOX_FAULTS__STALL_UPLOAD_S="60",
    )
    out, err = tmp_path / "out", tmp_path / "stderr"
    cli = _start(out, env, err)
    try:
        wait_until(lambda: recorded_intents(out / ".state"), timeout_s=120)
    except BaseException:
        os.killpg(cli.pid, signal.SIGKILL)
        raise
    return cli, out, err


def _flow_run_state(home: Path, out: Path) -> str:
    """The state the CLI's temporary server recorded for the run writing to ``out``."""
    with sqlite3.connect(home / "prefect.db") as db:
        rows = db.execute("SELECT parameters, state_type FROM flow_run").fetchall()
    states = [state for parameters, state in rows if json.loads(parameters)["out"] == str(out)]
    assert len(states) == 1
    return str(states[0])


def _stopped_output(err: Path) -> list[str]:
    text = err.read_text()
    assert "Traceback" not in text and "websocket" not in text.lower()
    return [line for line in text.splitlines() if "rerun the same command" in line]


def _ends(cli: subprocess.Popen[bytes]) -> float:
    """Seconds until ``cli`` exits (failing after 30)."""
    started = time.monotonic()
    cli.wait(timeout=30)
    return time.monotonic() - started


def test_sigterm_stops_within_10_s_and_a_rerun_uploads_nothing_twice(
    tmp_path: Path,
    subprocess_prefect_home: Path,
    sandbox_server: SandboxServer,
    sandbox: SandboxControl,
) -> None:
    sandbox.faults(processing_delay_s=[4, 4])  # uploaded jobs are still processing at the signal
    settings = sandbox_server.settings
    env = _env(
        subprocess_prefect_home,
        INVOX_BASE_URL=sandbox_server.base_url,
        INVOX_APP_ID=settings.app_id,
        INVOX_API_KEY=settings.api_key,
    )
    out, err = tmp_path / "out", tmp_path / "stderr"
    cli = _start(out, env, err)
    try:
        servers = wait_until(
            lambda: [p for p in _children(cli.pid) if SERVER_APP in _cmdline(p)], timeout_s=120
        )
        wait_until(lambda: recorded_uploads(out / ".state"), timeout_s=120)
    finally:
        os.kill(cli.pid, signal.SIGTERM)
    assert _ends(cli) < 10
    assert cli.returncode == 143
    [line] = _stopped_output(err)
    assert RESUME.match(line) and line.startswith("stopped by SIGTERM")
    assert _flow_run_state(subprocess_prefect_home, out) == "CANCELLED"
    assert not list(out.rglob("*.parquet")) and not (out / "runs").exists()  # nothing written
    assert not any(_alive(p) for p in servers)
    uploaded = sandbox.requests("upload")
    assert 0 < uploaded < 8  # stopped part-way: files not started were not started

    sandbox.faults(processing_delay_s=[0, 0])
    rerun = subprocess.run(
        [*RUN, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "8 of 8 files completed" in rerun.stdout
    assert set(sandbox.stats()["uploads_by_sha256"].values()) == {1}  # nothing uploaded twice


def test_sigterm_abandons_a_stalled_upload_safely_and_takes_the_sandbox_along(
    tmp_path: Path, subprocess_prefect_home: Path
) -> None:
    cli, out, err = _start_a_stalled_upload(tmp_path, subprocess_prefect_home)
    os.kill(cli.pid, signal.SIGTERM)
    assert _ends(cli) < 10
    assert cli.returncode == 143
    [line] = _stopped_output(err)
    assert RESUME.match(line)
    assert _flow_run_state(subprocess_prefect_home, out) == "CANCELLED"
    assert recorded_intents(out / ".state")  # the rerun asks the API before uploading
    port = int(re.findall(r"embedded sandbox at http://127\.0\.0\.1:(\d+)", err.read_text())[0])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass


def test_a_second_ctrl_c_exits_at_once(tmp_path: Path, subprocess_prefect_home: Path) -> None:
    cli, _, err = _start_a_stalled_upload(tmp_path, subprocess_prefect_home)
    try:
        os.killpg(cli.pid, signal.SIGINT)
        first = time.monotonic()
        wait_until(lambda: "stopping on SIGINT" in err.read_text(), timeout_s=10)
    finally:
        os.killpg(cli.pid, signal.SIGINT)
    cli.wait(timeout=30)
    assert time.monotonic() - first < STOP_GRACE_S  # the stalled upload's grace was not waited
    assert cli.returncode == 130
    [line] = _stopped_output(err)
    assert line.startswith("stopped by SIGINT")
