"""Access tokens: fetched with Basic app-id:api-key, cached, refreshed before they expire."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from ._config import InvoxSettings
from ._exceptions import (
    ConfigurationError,
    ResponseFormatError,
    error_from_response,
    error_from_transport,
)
from ._limiter import AdaptiveLimiter, send_limited

__all__ = ["TokenProvider", "basic_credentials", "parse_token_response"]

VERSION_HEADER = "X-Invox-Medical-Api-Version"


@dataclass(frozen=True)
class _Token:
    value: SecretStr
    refresh_at: float


def basic_credentials(app_id: str, api_key: str) -> str:
    """``Basic base64(appId:apiKey)``, the derivation the credentials page describes."""
    raw = f"{app_id}:{api_key}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def _lifetime(body: dict[str, Any], default_s: float) -> float:
    """Lifetime in seconds from ``expiresIn``/``expires_in``; absent or unusable → default."""
    raw = body.get("expiresIn", body.get("expires_in"))
    if isinstance(raw, bool):
        return default_s
    try:
        value = float(raw) if raw is not None else default_s
    except (TypeError, ValueError):
        return default_s
    return value if value > 0 else default_s


def parse_token_response(body: Any, default_ttl_s: float) -> tuple[SecretStr, float]:
    """The token and its lifetime from either spelling of the (undocumented) response."""
    if not isinstance(body, dict):
        raise ResponseFormatError("token response: expected a JSON object")
    token = body.get("accessToken", body.get("access_token"))
    if not isinstance(token, str) or not token:
        raise ResponseFormatError("token response: no accessToken or access_token")
    return SecretStr(token), _lifetime(body, default_ttl_s)


class TokenProvider:
    """Hands out a valid bearer token; one fetch at a time however many calls wait."""

    def __init__(
        self,
        settings: InvoxSettings,
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
        limiter: AdaptiveLimiter | None = None,
    ) -> None:
        self._settings = settings
        self._http = http
        self._limiter = limiter
        self._clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    def __repr__(self) -> str:
        return f"TokenProvider(cached={self._token is not None})"

    async def get(self) -> str:
        """A token that is valid now, fetching a new one only when needed."""
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return token.value.get_secret_value()
        async with self._lock:
            token = self._token
            if token is None or self._clock() >= token.refresh_at:
                token = self._token = await self._fetch()
        return token.value.get_secret_value()

    def invalidate(self, rejected: str) -> None:
        """Forget the token the server just refused (unless another call already replaced it)."""
        if self._token is not None and self._token.value.get_secret_value() == rejected:
            self._token = None

    async def _fetch(self) -> _Token:
        """POST the token endpoint with Basic credentials."""
        settings = self._settings
        if not settings.base_url:
            raise ConfigurationError("INVOX_BASE_URL is not set")
        if not settings.app_id or not settings.api_key.get_secret_value():
            raise ConfigurationError("INVOX_APP_ID and INVOX_API_KEY must both be set")
        headers = {
            "Authorization": basic_credentials(
                settings.app_id, settings.api_key.get_secret_value()
            ),
            VERSION_HEADER: settings.api_version,
        }
        url = settings.base_url + settings.token_path
        started = self._clock()
        try:
            response = await send_limited(
                self._limiter,
                lambda: self._http.post(url, headers=headers),
            )
        except httpx.TransportError as exc:
            raise error_from_transport(exc, operation="token request") from None
        if response.is_error:
            raise error_from_response(response, operation="token request")
        try:
            body = response.json()
        except ValueError:
            raise ResponseFormatError("token response: body is not JSON") from None
        value, ttl = parse_token_response(body, settings.default_token_ttl_s)
        self.fetches += 1
        margin = min(settings.token_refresh_margin_s, ttl / 10)
        return _Token(value=value, refresh_at=started + ttl - margin)
