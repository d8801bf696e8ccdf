"""Runners: a background-thread server for tests and embedding, and a blocking ``serve`` for the CLI."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Self

import uvicorn
from starlette.types import ASGIApp

from sandbox.app import create_app
from sandbox.settings import SandboxSettings

__all__ = ["SandboxServer", "ThreadedServer", "banner", "port_free", "serve"]

_POLL_S = 0.01
_GRACEFUL_SHUTDOWN_S = 5


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` yet (say so before starting, not after)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _bind(host: str, port: int) -> socket.socket:
    """Bind ourselves, so ``port=0`` yields a free port we know before uvicorn starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP,
    # and without it every response waits ~40 ms on delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _url_host(host: str) -> str:
    """A host clients can dial: wildcards become loopback, IPv6 gets brackets."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def _config(app: ASGIApp, *, embedded: bool) -> uvicorn.Config:
    """Quiet uvicorn: no access log, since it would print pre-signed URL signatures."""
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
        # Embedded servers must not reconfigure the host program's logging.
        log_config=None if embedded else uvicorn.config.LOGGING_CONFIG,
    )


class ThreadedServer:
    """Any ASGI app under uvicorn in a daemon thread on a loopback port; a context manager."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout_s: float = 10.0,
    ):
        self.app = app
        self.host = host
        self._requested_port = port
        self._startup_timeout_s = startup_timeout_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        """``http://host:port`` with the real port, no trailing slash."""
        if self._server is None:
            raise RuntimeError("server is not running")
        return f"http://{_url_host(self.host)}:{self.port}"

    def start(self) -> Self:
        """Start serving and return once uvicorn reports started (or fail loudly)."""
        if self._server is not None:
            raise RuntimeError("server already started")
        sock = _bind(self.host, self._requested_port)
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(_config(self.app, embedded=True))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{self.port}", daemon=True
        )
        self._server, self._thread = server, thread
        thread.start()
        self._wait_started(server, thread, sock)
        return self

    def _wait_started(
        self, server: uvicorn.Server, thread: threading.Thread, sock: socket.socket
    ) -> None:
        """Poll ``server.started`` against a monotonic deadline."""
        deadline = time.monotonic() + self._startup_timeout_s
        while not server.started:
            if not thread.is_alive():
                sock.close()
                self._server = self._thread = None
                raise RuntimeError(
                    "server thread exited during startup (see the log for the cause)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"server did not start within {self._startup_timeout_s:g}s")
            time.sleep(_POLL_S)

    def stop(self, timeout_s: float = 10.0, *, now: bool = False) -> None:
        """Ask uvicorn to exit (lifespan shutdown runs), then join; force if it lingers, or at
        once with ``now`` (requests in flight are not waited for)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        server.force_exit = now
        thread.join(timeout_s)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout_s)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SandboxServer(ThreadedServer):
    """The sandbox on a free loopback port: ``with SandboxServer(settings) as sb: sb.base_url``."""

    def __init__(
        self,
        settings: SandboxSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout_s: float = 10.0,
    ) -> None:
        self.settings = settings if settings is not None else SandboxSettings()
        super().__init__(
            create_app(self.settings), host=host, port=port, startup_timeout_s=startup_timeout_s
        )


def banner(settings: SandboxSettings, base_url: str) -> str:
    """What ``serve`` prints: copy-pasteable client settings plus the sandbox's own knobs."""
    return "\n".join(
        [
            f"Invox sandbox listening on {base_url} (processing: {settings.processing})",
            f"  INVOX_BASE_URL={base_url} INVOX_APP_ID={settings.app_id} INVOX_API_KEY={settings.api_key}",
            f"  token: POST {settings.token_path}   control plane: {base_url}/_sandbox/"
            "{reset,faults,stats,callbacks}",
            f"  callback signing: secret={settings.callback_secret} api_key={settings.callback_api_key}",
        ]
    )


def serve(settings: SandboxSettings, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the sandbox in the foreground until interrupted (the CLI's ``sandbox`` command)."""
    sock = _bind(host, port)
    base_url = f"http://{_url_host(host)}:{sock.getsockname()[1]}"
    print(banner(settings, base_url), flush=True)
    uvicorn.Server(_config(create_app(settings), embedded=False)).run(sockets=[sock])


if __name__ == "__main__":
    serve(SandboxSettings())
