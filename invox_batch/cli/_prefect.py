"""The Prefect server a CLI run talks to: the user's (``PREFECT_API_URL``), or one started for the
run that dies with the CLI, even after ``kill -9`` (a parent-death signal, on Linux). That one
listens on a socket the CLI bound (no race for the port), prints nothing to the console, and is
replaced once if it exits while starting."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

import httpx
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


# Prefect's API app on the socket the CLI bound and handed over (its descriptor is argv[1]):
# no other process can take the port between choosing it and listening on it.
_SERVE = """
import socket, sys
import uvicorn
config = uvicorn.Config(
    "prefect.server.api.server:create_app", factory=True, log_level="error", lifespan="on"
)
uvicorn.Server(config).run(sockets=[socket.socket(fileno=int(sys.argv[1]))])
"""
_ATTEMPTS = 2


def _bind() -> socket.socket:
    """A listening loopback socket on a free port, for the server to inherit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def _start(sock: socket.socket, output: IO[bytes]) -> subprocess.Popen[bytes]:
    """Prefect's own temporary server (the app ``prefect`` starts itself), UI off; what it
    prints goes to ``output``, never to the console."""
    env = {
        **os.environ,
        **get_current_settings().to_environment_variables(exclude_unset=True),
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    linux = sys.platform.startswith("linux")
    return subprocess.Popen(
        [sys.executable, "-c", _SERVE, str(sock.fileno())],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=output,
        pass_fds=(sock.fileno(),),
        preexec_fn=_die_with_parent if linux else None,
        start_new_session=True,
    )


def _healthy(server: subprocess.Popen[bytes], url: str, timeout_s: float) -> bool:
    """Poll the health endpoint until it answers (True), or the server exits (False); a server
    that stalls is one line."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise ConfigurationError(f"Prefect's temporary server did not start within {timeout_s:g} s")


def _stop(server: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    server.terminate()
    try:
        server.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


class _Server:
    """One temporary server, started at once and stopped on exit; its output kept aside."""

    def __init__(self) -> None:
        self.output = tempfile.TemporaryFile()  # noqa: SIM115 (closed on exit)
        with _bind() as sock:  # the server holds its own copy
            self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
            self.process = _start(sock, self.output)

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        _stop(self.process)
        self.output.close()

    def ready(self, timeout_s: float) -> bool:
        """True once it answers, False if it exited first."""
        return _healthy(self.process, self.url, timeout_s)

    def keep_output(self) -> Path:
        """A failed server's output, kept beside Prefect's database for whoever investigates."""
        self.output.seek(0)
        path = Path(get_current_settings().home) / "invox-batch-server.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.output.read())
        return path


def _drain() -> None:
    """Logs and events reach the server before it goes, not retried at exit."""
    APILogWorker.drain_all(timeout=5)
    EventsWorker.drain_all(timeout=5)


@contextmanager
def prefect_api() -> Iterator[Callable[[], None]]:
    """The API runs use: the configured one, or a temporary server's for the duration. That
    server starts at once; what is yielded waits until it answers (and points Prefect at it),
    so the CLI's other start-up work overlaps with the server's."""
    if PREFECT_API_URL.value():
        yield lambda: None
        return
    timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60"))
    with ExitStack() as stack:
        servers: list[_Server] = []

        def start() -> None:
            servers.append(stack.enter_context(_Server()))

        def ready() -> None:
            """Until a server answers; one that exits while starting is replaced once."""
            while not servers[-1].ready(timeout):
                if len(servers) == _ATTEMPTS:
                    code, log = servers[-1].process.returncode, servers[-1].keep_output()
                    raise ConfigurationError(
                        f"Prefect's temporary server exited ({code}); its output is in {log}"
                    )
                start()
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: servers[-1].url}))
            stack.callback(_drain)

        start()
        yield ready
