"""What the CLI starts dies with it: Prefect's temporary server after a ``kill -9`` of the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT, SAMPLES
from ..flow_helpers import recorded_uploads
from ..helpers import wait_until

SERVER_APP = "prefect.server.api.server:create_app"


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_the_cli_leaves_no_prefect_server_behind(
    tmp_path: Path, subprocess_prefect_home: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVOX_", "PREFECT_API"))}
    env["PREFECT_HOME"] = str(subprocess_prefect_home)
    env["INVOX_SANDBOX_PROCESSING"] = "instant"
    env["INVOX_SANDBOX_FAULTS__PROCESSING_DELAY_S"] = "[60, 60]"  # the run is still going
    command = [sys.executable, "-m", "invox_batch", "run", str(SAMPLES / "manifest.csv")]
    cli = subprocess.Popen(
        [*command, "--out", str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        servers = wait_until(
            lambda: [p for p in _children(cli.pid) if SERVER_APP in _cmdline(p)], timeout_s=120
        )
        wait_until(lambda: recorded_uploads(tmp_path / "out" / ".state"), timeout_s=120)
    finally:
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait()
    wait_until(lambda: not any(_alive(p) for p in servers), timeout_s=30)
