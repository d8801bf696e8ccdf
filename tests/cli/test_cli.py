"""The ``invox-batch`` command as users run it: real subprocesses, real exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sandbox.server import SandboxServer

from ..conftest import ROOT, SAMPLES
from ..helpers import SandboxControl


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command with a clean INVOX_* environment plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("INVOX_")}
    return subprocess.run(
        [sys.executable, "-m", "invox_batch", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**base, **(env or {})},
    )


def test_the_transcribe_command_is_gone_run_does_its_work(tmp_path: Path) -> None:
    done = run_cli("transcribe", str(SAMPLES / "visit-001.wav"))
    assert done.returncode == 2 and "No such command 'transcribe'" in done.stderr


def test_bad_credentials_exit_2_after_one_token_call(
    sandbox_server: SandboxServer, sandbox: SandboxControl, tmp_path: Path
) -> None:
    env = {
        "INVOX_BASE_URL": sandbox_server.base_url,
        "INVOX_APP_ID": "sandbox-app",
        "INVOX_API_KEY": "sentinel-bad-key",
    }
    done = run_cli("run", str(SAMPLES / "manifest.csv"), "--out", str(tmp_path / "o"), env=env)
    assert done.returncode == 2, done.stderr
    assert "INVOX_API_KEY" in done.stderr and "sentinel-bad-key" not in done.stderr + done.stdout
    assert sandbox.requests("token") == 1 and sandbox.requests("presign") == 0
    assert "Traceback" not in done.stderr


def test_base_url_that_is_not_a_url_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    env = {"INVOX_BASE_URL": "nonsense", "INVOX_APP_ID": "a", "INVOX_API_KEY": "k"}
    done = run_cli("run", str(SAMPLES / "manifest.csv"), "--out", str(tmp_path / "o"), env=env)
    assert done.returncode == 2 and "INVOX_BASE_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_manifest_exits_2(tmp_path: Path) -> None:
    done = run_cli("run", "no/such/manifest.csv", "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "no/such/manifest.csv" in done.stderr


def test_prefect_analytics_are_off_in_the_cli_unless_the_user_set_them() -> None:
    code = (
        "import os, sys\n"
        "sys.argv = ['invox-batch', '--help']\n"
        "from invox_batch.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('ANALYTICS=' + os.environ['PREFECT_SERVER_ANALYTICS_ENABLED'])\n"
        "print('DO_NOT_TRACK=' + os.environ['DO_NOT_TRACK'])\n"
    )
    chosen_by_user = ("PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK")
    env = {k: v for k, v in os.environ.items() if k not in chosen_by_user}
    unset = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "ANALYTICS=false" in unset.stdout and "DO_NOT_TRACK=1" in unset.stdout, unset.stderr
    chosen = {**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "true"}
    kept = subprocess.run([sys.executable, "-c", code], env=chosen, capture_output=True, text=True)
    assert "ANALYTICS=true" in kept.stdout, kept.stderr


def test_the_sandbox_command_serves_the_double_and_refuses_bad_settings_in_one_line() -> None:
    import socket

    import httpx

    from ..helpers import wait_until

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = [sys.executable, "-m", "invox_batch", "sandbox", "--port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/_sandbox/stats").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout_s=60)
    finally:
        server.terminate()
        server.wait(timeout=30)
    env = {**os.environ, "INVOX_SANDBOX_FAULTS": "notjson"}
    refused = subprocess.run(
        [*command[:-1], "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "error: INVOX_SANDBOX_FAULTS: not valid JSON for this setting"
    ]
