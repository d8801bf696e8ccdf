"""Callback signatures: the contract's §19 scheme, as pure functions.

The provider does not document how the batch callback is signed. By analogy with its platform
webhooks we sign ``requestId | JSON.stringify(transcription) | createdAt | apiKey`` with
HMAC-SHA256 keyed by a secret and Base64-encode the digest. Checking is off by default in the
client until the provider confirms the scheme.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from collections.abc import Mapping
from typing import Any

__all__ = [
    "CallbackSignatureError",
    "callback_string_to_sign",
    "check_created_at",
    "sign_callback",
    "verify_callback_signature",
]


class CallbackSignatureError(Exception):
    """A callback failed verification; ``reason`` is machine-readable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _js_value(value: Any) -> Any:
    """Mirror JavaScript number formatting, where 1.0 is written as 1."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {k: _js_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_js_value(v) for v in value]
    return value


def _js_string(value: Any) -> str:
    """``String(value)`` for scalars and ``JSON.stringify(value)`` for objects, as the scheme says."""
    if value is None:
        return ""
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(_js_value(value), separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(_js_value(value))


def callback_string_to_sign(payload: Mapping[str, Any], api_key: str) -> str:
    """Join the signed fields in payload order, then the public api key, with ``|``."""
    fields = [payload.get("requestId"), payload.get("transcription"), payload.get("createdAt")]
    return "|".join([*(_js_string(f) for f in fields), api_key])


def sign_callback(payload: Mapping[str, Any], *, secret: str, api_key: str) -> str:
    """Base64(HMAC-SHA256(secret, string_to_sign)): what the sandbox sends as ``signature``."""
    message = callback_string_to_sign(payload, api_key).encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_callback_signature(
    payload: Mapping[str, Any],
    *,
    secret: str,
    api_key: str,
    tolerance_s: float = 300.0,
    now_ms: float | None = None,
) -> None:
    """Raise ``CallbackSignatureError`` unless the payload is signed and fresh."""
    signature = payload.get("signature")
    if not isinstance(signature, str) or not signature:
        raise CallbackSignatureError("missing_signature", "callback carries no signature")
    expected = sign_callback(payload, secret=secret, api_key=api_key)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise CallbackSignatureError("bad_signature", "callback signature does not match")
    check_created_at(payload, tolerance_s, now_ms)


def check_created_at(
    payload: Mapping[str, Any], tolerance_s: float, now_ms: float | None = None
) -> None:
    """Refuse a ``createdAt`` (epoch ms) further than the tolerance from now: replays age out."""
    created_at = payload.get("createdAt")
    if not isinstance(created_at, int | float) or isinstance(created_at, bool):
        raise CallbackSignatureError("missing_timestamp", "callback carries no numeric createdAt")
    now = time.time() * 1000 if now_ms is None else now_ms
    if abs(now - created_at) > tolerance_s * 1000:
        raise CallbackSignatureError(
            "stale_timestamp", f"callback createdAt is more than {tolerance_s:g}s from now"
        )
