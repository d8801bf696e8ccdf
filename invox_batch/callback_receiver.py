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
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

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
from sandbox.server import ThreadedServer

from .callback_store import CallbackStore
from .errors import CallbackRejected

__all__ = [
    "CALLBACK_PATH",
    "SCHEMES",
    "CallbackRejected",
    "ReceiverConfig",
    "accept_callback",
    "create_receiver_app",
    "running_receiver",
    "serve_receiver",
]

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


def verify(body: dict[str, Any], config: ReceiverConfig, now_ms: float | None = None) -> None:
    """Apply the configured scheme; every scheme refuses a stale ``createdAt``."""
    try:
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


def _record_of(body: dict[str, Any], config: ReceiverConfig) -> dict[str, Any]:
    """What is kept: the payload as received, when, and how it was checked."""
    return {
        "requestId": body["requestId"],
        "receivedAt": int(time.time() * 1000),
        "scheme": config.scheme,
        "payload": body,
    }


def accept_callback(
    raw: bytes, store: CallbackStore, config: ReceiverConfig, now_ms: float | None = None
) -> tuple[str, str]:
    """Check one delivery and record it: ``(request_id, "recorded" | "duplicate")`` or raise."""
    body = _parse(raw)
    verify(body, config, now_ms)
    signature = body.get("signature")
    verified = config.scheme != "none" and isinstance(signature, str)
    # A checked signature pins the content, whatever the JSON's spacing; else the raw body.
    fingerprint: str | bytes = str(signature) if verified else raw
    if not store.first_sighting(fingerprint):
        raise CallbackRejected("replayed", "this exact callback was already accepted", 409)
    try:
        return body["requestId"], store.record(body["requestId"], _record_of(body, config))
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


def _handler(
    store: CallbackStore, config: ReceiverConfig
) -> Callable[[Request], Awaitable[Response]]:
    """The POST endpoint: everything it does before answering is one small fsynced write."""

    async def receive(request: Request) -> Response:
        try:
            raw = await _read_limited(request, MAX_BODY_BYTES)
            request_id, outcome = await asyncio.to_thread(accept_callback, raw, store, config)
        except CallbackRejected as exc:
            _log.warning("callback refused (%s): %s", exc.reason, exc)
            return JSONResponse({"error": exc.reason}, status_code=exc.status)
        _log.info("callback for request %s %s", request_id, outcome)
        return JSONResponse({"result": outcome}, status_code=200)

    return receive


async def _health(request: Request) -> Response:
    """Liveness for a load balancer or tunnel in front of the receiver."""
    return JSONResponse({"ok": True})


def create_receiver_app(store: CallbackStore, config: ReceiverConfig) -> Starlette:
    """The receiver as an ASGI app: ``POST /callbacks`` and ``GET /healthz``."""
    return Starlette(
        routes=[
            Route(CALLBACK_PATH, _handler(store, config), methods=["POST"]),
            Route("/healthz", _health, methods=["GET"]),
        ]
    )


@contextmanager
def running_receiver(
    store: CallbackStore, config: ReceiverConfig, host: str = "127.0.0.1", port: int = 0
) -> Iterator[ThreadedServer]:
    """The receiver under uvicorn in a background thread, for the flow's in-process mode."""
    server = ThreadedServer(create_receiver_app(store, config), host=host, port=port)
    try:
        server.start()
    except OSError as exc:
        raise ConfigurationError(
            f"callback_listen {host}:{port}: cannot listen ({exc.strerror or exc}); "
            "pick a free port, or port 0 for any"
        ) from None
    try:
        yield server
    finally:
        server.stop()


def serve_receiver(
    store: CallbackStore, config: ReceiverConfig, host: str, port: int, say: Callable[[str], None]
) -> None:
    """Run the receiver in the foreground until interrupted (``invox-batch callbacks``)."""
    import uvicorn

    say(f"callback receiver on http://{host}:{port}{CALLBACK_PATH}, recording to {store.root}")
    say(describe(config))
    # No access log: it adds nothing the receiver's own lines do not say.
    uvicorn.run(create_receiver_app(store, config), host=host, port=port, access_log=False)


def describe(config: ReceiverConfig) -> str:
    """One line for the operator saying what is (and is not) checked."""
    if config.scheme == "none":
        return (
            f"signatures NOT checked (INVOX_VERIFY_CALLBACK_SIGNATURES off); createdAt within "
            f"{config.tolerance_s:g}s, replays refused; callbacks are hints, results are fetched"
        )
    return (
        f"signatures checked (hmac-sha256), createdAt within {config.tolerance_s:g}s, "
        "replays refused; callbacks are hints, results are fetched"
    )
