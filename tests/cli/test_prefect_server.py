"""The temporary Prefect server the CLI starts prints nothing to the console: a server that
cannot start is one line (its output kept in a file), never its traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from ..conftest import ROOT, SAMPLES


def test_a_server_that_cannot_start_is_one_line_and_its_output_is_kept(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVOX_", "PREFECT_API"))}
    env["PREFECT_HOME"] = str(tmp_path / "home")
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = "sqlite+aiosqlite:////proc/none/prefect.db"
    env["INVOX_SANDBOX_PROCESSING"] = "instant"
    command = [sys.executable, "-m", "invox_batch", "run", str(SAMPLES / "manifest.csv")]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 2
    console = done.stdout + done.stderr
    assert "Traceback" not in console and "uvicorn" not in console
    log = tmp_path / "home" / "invox-batch-server.log"
    [line] = [line for line in console.splitlines() if line.startswith("error:")]
    assert re.fullmatch(
        rf"error: Prefect's temporary server exited \(\d+\); its output is in {log}", line
    )
    assert "Application startup failed" in log.read_text()
