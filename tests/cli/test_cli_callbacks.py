"""``invox-batch callbacks`` and ``run --completion callback``: usage errors, a real receiver process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from invox_batch.callbacks import CallbackStore
from invox_batch.cli import app

from ..conftest import ROOT, SAMPLES
from ..helpers import clear_env, wait_until
from ..library.test_callback_receiver import API_KEY, SECRET, signed, tampered

runner = CliRunner()
MANIFEST = str(SAMPLES / "manifest.csv")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--completion", "callback"], "needs --callback-listen"),
        (["--completion", "sometimes"], "--completion must be poll or callback"),
        (["--callback-listen", "127.0.0.1:0"], "need --completion callback"),
        (["--completion", "callback", "--callback-listen", "nowhere"], "must be host:port"),
    ],
)
def test_run_refuses_unusable_callback_flags_with_exit_2(args: list[str], message: str) -> None:
    done = runner.invoke(app, ["run", MANIFEST, *args])
    assert done.exit_code == 2 and message in done.output, done.output


def test_callbacks_refuses_a_scheme_it_cannot_check(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_env(monkeypatch, "INVOX_CALLBACK_SECRET", "INVOX_CALLBACK_API_KEY")
    monkeypatch.setenv("INVOX_VERIFY_CALLBACK_SIGNATURES", "true")
    done = runner.invoke(app, ["callbacks"])
    assert done.exit_code == 2 and "INVOX_CALLBACK_SECRET" in done.output
    done = runner.invoke(app, ["callbacks", "--scheme", "rot13"])
    assert done.exit_code == 2 and "unknown callback scheme" in done.output
    listen = ["--completion", "callback", "--callback-listen", "127.0.0.1:0"]
    done = runner.invoke(app, ["run", MANIFEST, *listen])
    assert done.exit_code == 2 and "INVOX_CALLBACK_SECRET" in done.output


def test_the_receiver_refuses_a_port_in_use_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = runner.invoke(app, ["callbacks", "--port", port, "--out", str(tmp_path)])
    assert result.exit_code == 2 and f"127.0.0.1:{port} is in use" in result.output


@pytest.mark.usefixtures("prefect_harness")
def test_run_in_callback_mode_with_its_own_receiver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_env(
        monkeypatch, "INVOX_BASE_URL", "INVOX_APP_ID", "INVOX_API_KEY", "INVOX_CACHE_NAMESPACE"
    )
    monkeypatch.setenv("INVOX_SANDBOX_PROCESSING", "instant")
    out = tmp_path / "out"
    args = ["--out", str(out), "--completion", "callback", "--callback-listen", "127.0.0.1:0"]
    done = runner.invoke(app, ["run", MANIFEST, *args])
    assert done.exit_code == 0, done.output
    assert "API calls: token=1, presign=8, upload=8, status=8" in done.output
    assert len(list((out / ".state" / "callbacks").glob("*.json"))) == 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def receiver_process(tmp_path: Path) -> Iterator[tuple[str, CallbackStore]]:
    """``invox-batch callbacks`` in its own process, checking HMAC signatures."""
    port, store = _free_port(), tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOX_")}
    env |= {"INVOX_CALLBACK_SECRET": SECRET, "INVOX_CALLBACK_API_KEY": API_KEY}
    command = [sys.executable, "-m", "invox_batch", "callbacks", "--port", str(port)]
    command += ["--store", str(store), "--scheme", "hmac-sha256"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, "the receiver exited during startup"
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout_s=30, interval_s=0.1)
        yield f"{base}/callbacks", CallbackStore(store)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    assert "signatures checked (hmac-sha256)" in output
    assert "FORGED" not in output and SECRET not in output


def test_the_receiver_process_records_valid_callbacks_for_other_processes(
    receiver_process: tuple[str, CallbackStore],
) -> None:
    url, store = receiver_process
    genuine = signed(request_id="req-cli")
    with httpx.Client(timeout=10) as http:
        assert http.post(url, content=tampered(genuine)).status_code == 401
        assert http.post(url, content=genuine).json() == {"result": "recorded"}
        assert http.post(url, content=genuine).status_code == 409
    record = store.read("req-cli")
    assert record is not None and record["payload"]["requestId"] == "req-cli"
