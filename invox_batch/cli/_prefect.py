"""The Prefect server a CLI run talks to: the user's (``PREFECT_API_URL``), or one started for the
run that dies with the CLI, even after ``kill -9`` (a parent-death signal, on Linux)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import prefect
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from invox import ConfigurationError

__all__ = ["prefect_api"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the server's process, before it runs: SIGTERM when the CLI that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(port: int) -> subprocess.Popen[bytes]:
    """Prefect's own temporary server (the app ``prefect`` starts itself), UI off."""
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(Path(prefect.__file__).parent.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    env = {
        **os.environ,
        **get_current_settings().to_environment_variables(exclude_unset=True),
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    linux = sys.platform.startswith("linux")
    return subprocess.Popen(
        command, env=env, preexec_fn=_die_with_parent if linux else None, start_new_session=True
    )


def _wait_healthy(server: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
    """Poll the health endpoint until it answers; a server that exits or stalls is one line."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ConfigurationError(f"Prefect's temporary server exited ({server.returncode})")
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise ConfigurationError(f"Prefect's temporary server did not start within {timeout_s:g} s")


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@contextmanager
def prefect_api() -> Iterator[str]:
    """The API URL runs use: the configured one, or a temporary server's for the duration."""
    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    server = _start(port)
    try:
        timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60"))
        _wait_healthy(server, url, timeout)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            try:
                yield url
            finally:  # logs and events reach the server before it goes, not retried at exit
                APILogWorker.drain_all(timeout=5)
                EventsWorker.drain_all(timeout=5)
    finally:
        _stop(server)
