"""The callback receiver: verify, refuse stale and replayed deliveries, record once, answer fast.

A callback is only a hint (contract §10 #19): the flow still fetches every result with
``get-transcription``. The receiver's job is to make the hint trustworthy enough to act on and
cheap to send: it verifies with a pluggable scheme (the provider's is undocumented), refuses a
``createdAt`` outside the tolerance and any exact repeat of an accepted delivery, keeps the first
delivery per ``requestId``, and answers as soon as the record is on disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from invox import (
    CallbackSignatureError,
    ConfigurationError,
    InvoxSettings,
    check_created_at,
    verify_callback_signature,
)

from ..errors import CallbackRejected
from ..output import Output
from ._store import CallbackStore

__all__ = ["ReceiverConfig", "accept_callback", "running_receiver", "serve_callbacks"]

CALLBACK_PATH = "/callbacks"
MAX_BODY_BYTES = 32 * 1024 * 1024  # a long consultation's segments, with ample room
SCHEMES = ("hmac-sha256", "none")
Scheme = Literal["hmac-sha256", "none"]
_log = logging.getLogger("invox_batch.callbacks")


@dataclass(frozen=True)
class ReceiverConfig:
    """How deliveries are checked; built from the INVOX_CALLBACK_* settings."""

    scheme: Scheme
    tolerance_s: float
    secret: str | None = None
    api_key: str | None = None

    @classmethod
    def from_settings(cls, settings: InvoxSettings, scheme: str | None = None) -> ReceiverConfig:
        """HMAC when INVOX_VERIFY_CALLBACK_SIGNATURES is on (or asked for), else timestamps only."""
        chosen = scheme or ("hmac-sha256" if settings.verify_callback_signatures else "none")
        if chosen not in SCHEMES:
            raise ConfigurationError(f"unknown callback scheme {chosen!r}: use one of {SCHEMES}")
        if chosen == "none":
            return cls("none", settings.callback_tolerance_s)
        if settings.callback_secret is None or settings.callback_api_key is None:
            raise ConfigurationError(
                "callback scheme hmac-sha256 needs INVOX_CALLBACK_SECRET and INVOX_CALLBACK_API_KEY"
            )
        return cls(
            "hmac-sha256",
            settings.callback_tolerance_s,
            settings.callback_secret.get_secret_value(),
            settings.callback_api_key.get_secret_value(),
        )


def _parse(raw: bytes) -> dict[str, Any]:
    """A JSON object with a non-empty string ``requestId``, or a 400."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CallbackRejected("malformed", "callback body is not JSON", 400) from None
    if not isinstance(body, dict):
        raise CallbackRejected("malformed", "callback body is not a JSON object", 400)
    request_id = body.get("requestId")
    if not isinstance(request_id, str) or not request_id or len(request_id) > 200:
        raise CallbackRejected("malformed", "callback carries no usable requestId", 400)
    return body


def accept_callback(
    raw: bytes, store: CallbackStore, config: ReceiverConfig, now_ms: float | None = None
) -> tuple[str, str]:
    """Check one delivery and record it: ``(request_id, "recorded" | "duplicate")`` or raise."""
    body = _parse(raw)
    try:  # every scheme refuses a stale createdAt
        if config.scheme == "hmac-sha256":
            assert config.secret is not None and config.api_key is not None
            verify_callback_signature(
                body,
                secret=config.secret,
                api_key=config.api_key,
                tolerance_s=config.tolerance_s,
                now_ms=now_ms,
            )
        else:
            check_created_at(body, config.tolerance_s, now_ms)
    except CallbackSignatureError as exc:
        raise CallbackRejected(exc.reason, str(exc)) from None
    signature = body.get("signature")
    verified = config.scheme != "none" and isinstance(signature, str)
    # A checked signature pins the content, whatever the JSON's spacing; else the raw body.
    fingerprint: str | bytes = str(signature) if verified else raw
    if not store.first_sighting(fingerprint):
        raise CallbackRejected("replayed", "this exact callback was already accepted", 409)
    request_id, now = body["requestId"], int(time.time() * 1000)
    record = {"requestId": request_id, "receivedAt": now, "scheme": config.scheme, "payload": body}
    try:
        return request_id, store.record(request_id, record)
    except OSError:
        store.forget_sighting(fingerprint)  # let the provider's retry in
        raise


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refusing more than ``limit`` bytes without reading them all."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise CallbackRejected("too_large", f"callback body exceeds {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _app(store: CallbackStore, config: ReceiverConfig) -> Starlette:
    """``POST /callbacks`` (one small fsynced write before answering) and ``GET /healthz``."""

    async def receive(request: Request) -> Response:
        try:
            raw = await _read_limited(request, MAX_BODY_BYTES)
            request_id, outcome = await asyncio.to_thread(accept_callback, raw, store, config)
        except CallbackRejected as exc:
            _log.warning("callback refused (%s): %s", exc.reason, exc)
            return JSONResponse({"error": exc.reason}, status_code=exc.status)
        _log.info("callback for request %s %s", request_id, outcome)
        return JSONResponse({"result": outcome}, status_code=200)

    async def health(request: Request) -> Response:
        """Liveness for a load balancer or tunnel in front of the receiver."""
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route(CALLBACK_PATH, receive, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )


def _bind(host: str, port: int) -> socket.socket:
    """Listen before uvicorn starts, so port 0 yields a known port and a taken one fails early."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only then (else ~40 ms delayed ACKs).
    sock = socket.socket(
        socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(
            f"the callback receiver cannot listen: {host}:{port} is in use or unavailable "
            f"({exc.strerror or exc}); pick a free port"
        ) from None
    return sock


@contextmanager
def running_receiver(
    store: CallbackStore, config: ReceiverConfig, host: str = "127.0.0.1", port: int = 0
) -> Iterator[str]:
    """The receiver under uvicorn in a background thread (the flow's in-process mode): its URL."""
    sock = _bind(host, port)
    # Embedded: no access log, and leave the host program's logging configuration alone.
    app = _app(store, config)
    server = uvicorn.Server(
        uvicorn.Config(
            app, access_log=False, log_config=None, log_level="warning", timeout_graceful_shutdown=5
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:  # uvicorn has no startup event to wait on
            if not thread.is_alive():
                raise RuntimeError("the callback receiver exited during startup (see the log)")
            time.sleep(0.01)
        url_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # dialable
        url_host = f"[{url_host}]" if ":" in url_host else url_host
        yield f"http://{url_host}:{sock.getsockname()[1]}{CALLBACK_PATH}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


def serve_callbacks(
    settings: InvoxSettings,
    port: int,
    host: str,
    out: str,
    store: str | None,
    scheme: str | None,
    say: Callable[[str], None],
) -> None:
    """Check the settings, then serve in the foreground until interrupted (``invox-batch callbacks``)."""
    config = ReceiverConfig.from_settings(settings, scheme)
    root = Path(store) if store else Output.parse(out).default_state_dir() / "callbacks"
    sock = _bind(host, port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    say(f"callback receiver on http://{host}:{port}{CALLBACK_PATH}, recording to {root}")
    checked = (
        "NOT checked (INVOX_VERIFY_CALLBACK_SIGNATURES off);"
        if config.scheme == "none"
        else f"checked ({config.scheme}),"
    )
    say(
        f"signatures {checked} createdAt within {config.tolerance_s:g}s, replays refused; "
        "callbacks are hints, results are fetched"
    )
    # No access log: it adds nothing the receiver's own lines do not say.
    app = _app(CallbackStore(root), config)
    uvicorn.Server(uvicorn.Config(app, access_log=False)).run(sockets=[sock])
