"""Accepting a callback: parse it, and verify its signature when the settings ask for it."""

from __future__ import annotations

from typing import Any

from ._config import InvoxSettings
from ._exceptions import ConfigurationError
from ._models import CallbackPayload, parse_callback
from ._signature import verify_callback_signature

__all__ = ["check_callback"]


def check_callback(
    body: Any, settings: InvoxSettings, *, now_ms: float | None = None
) -> CallbackPayload:
    """A parsed callback; signed and fresh when INVOX_VERIFY_CALLBACK_SIGNATURES is on.

    Either way a callback is only a hint: fetch the authoritative result with get-transcription.
    """
    payload = parse_callback(body)
    if not settings.verify_callback_signatures:
        return payload
    if settings.callback_secret is None or settings.callback_api_key is None:
        raise ConfigurationError(
            "INVOX_VERIFY_CALLBACK_SIGNATURES is on: set INVOX_CALLBACK_SECRET and "
            "INVOX_CALLBACK_API_KEY"
        )
    verify_callback_signature(
        body,
        secret=settings.callback_secret.get_secret_value(),
        api_key=settings.callback_api_key.get_secret_value(),
        tolerance_s=settings.callback_tolerance_s,
        now_ms=now_ms,
    )
    return payload
