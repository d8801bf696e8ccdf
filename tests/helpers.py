"""Test helpers: deadline polling and a thin driver for the sandbox control plane."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def clear_env(monkeypatch: Any, *names: str) -> None:
    """Unset variables so that monkeypatch restores them later even if the code under test sets
    them (``delenv`` of an absent variable records nothing to undo)."""
    for name in names:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def wait_until(
    probe: Callable[[], T | None], *, timeout_s: float = 10.0, interval_s: float = 0.02
) -> T:
    """Poll ``probe`` until it returns something truthy, failing loudly at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        time.sleep(interval_s)


class SandboxControl:
    """Drives ``/_sandbox/...``: reset, faults and stats."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._http = httpx.Client(base_url=base_url, timeout=10.0)

    def reset(self) -> None:
        self._http.post("/_sandbox/reset").raise_for_status()

    def faults(self, **changes: Any) -> dict[str, Any]:
        response = self._http.put("/_sandbox/faults", json=changes)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return self._http.get("/_sandbox/stats").raise_for_status().json()  # type: ignore[no-any-return]

    def callbacks(self) -> list[dict[str, Any]]:
        return self._http.get("/_sandbox/callbacks").raise_for_status().json()  # type: ignore[no-any-return]

    def requests(self, endpoint: str) -> int:
        return int(self.stats()["requests"].get(endpoint, 0))


class CallbackReceiver:
    """A real HTTP endpoint on loopback that records every callback POSTed to it."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                headers = {k.lower(): v for k, v in self.headers.items()}
                received.append({"path": self.path, "headers": headers, "body": body})
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Silence the default stderr access log."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/invox/callback"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The first ``count`` callbacks, once they have arrived."""
        wait_until(lambda: len(self.received) >= count, timeout_s=timeout_s)
        return self.received[:count]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
