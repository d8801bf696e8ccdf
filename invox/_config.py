"""Client configuration: one typed settings object read from ``INVOX_*`` environment variables."""

from __future__ import annotations

import httpx
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ACCEPTED_MIME_TYPES", "DEFAULT_API_VERSION", "DEFAULT_MIME_TYPES", "InvoxSettings"]

DEFAULT_API_VERSION = "2025-11-01"

# The contract's published list (§9) plus audio/mpeg, which the docs' own example uses.
ACCEPTED_MIME_TYPES: frozenset[str] = frozenset(
    {
        "audio/x-wav",
        "audio/wav",
        "audio/mp3",
        "audio/m4a",
        "audio/flac",
        "audio/ogg",
        "audio/webm",
        "audio/mpeg",
    }
)

# Extension map; MP3 goes as audio/mp3 (the live API may prefer audio/mpeg).
DEFAULT_MIME_TYPES: dict[str, str] = {
    ".wav": "audio/wav",
    ".mp3": "audio/mp3",
    ".m4a": "audio/m4a",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".webm": "audio/webm",
}


class InvoxSettings(BaseSettings):
    """Everything the client needs to reach one Invox environment."""

    model_config = SettingsConfigDict(env_prefix="INVOX_", extra="ignore")

    base_url: str | None = Field(
        default=None, description="API root; /api/v1/... paths are appended verbatim."
    )
    cache_namespace: str | None = Field(
        default=None,
        description="Names this API environment in audio identity; default the base URL.",
    )
    app_id: str = Field(default="", description="Application id of the credential.")
    api_key: SecretStr = Field(default=SecretStr(""), description="API key of the credential.")
    api_version: str = Field(
        default=DEFAULT_API_VERSION, description="Sent as X-Invox-Medical-Api-Version."
    )
    token_path: str = Field(default="/api/v1/token", description="Token endpoint (undocumented).")
    token_refresh_margin_s: float = Field(
        default=600.0, ge=0, description="Refresh the token this long before it expires."
    )
    default_token_ttl_s: float = Field(
        default=7200.0, gt=0, description="Token lifetime when the token response omits it."
    )
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=30.0, gt=0)
    write_timeout_s: float = Field(default=60.0, gt=0)
    pool_timeout_s: float = Field(default=30.0, gt=0)
    upload_confirm_s: float = Field(
        default=120.0,
        ge=0,
        description="After an upload whose answer was lost, poll this long for proof it landed.",
    )
    upload_chunk_bytes: int = Field(default=1024 * 1024, ge=4096)
    max_upload_bytes: int = Field(
        default=500 * 1024 * 1024,
        ge=1,
        description="validate warns about larger files (the provider documents no limit).",
    )
    mime_types: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MIME_TYPES))
    verify_callback_signatures: bool = Field(
        default=False,
        description="Check callback signatures; off until Invox confirms the scheme.",
    )
    callback_secret: SecretStr | None = Field(
        default=None, description="HMAC key for callback signatures (scheme unconfirmed)."
    )
    callback_api_key: SecretStr | None = Field(
        default=None, description="Public key appended to the callback string to sign."
    )
    callback_tolerance_s: float = Field(default=300.0, gt=0)
    adaptive_concurrency: bool = Field(
        default=True,
        description="Adapt API calls in flight to the server's 429s (AIMD); off: no client cap.",
    )
    initial_concurrency: int = Field(
        default=4, ge=1, description="API calls in flight at the start when adapting."
    )
    max_inflight: int = Field(
        default=64, ge=1, description="Never more API calls in flight than this when adapting."
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        """Reject anything that is not an absolute http(s) URL, before any request is made."""
        if value is None or value == "":
            return None
        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ValueError(f"INVOX_BASE_URL is not a valid URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(
                "INVOX_BASE_URL must be an absolute http(s) URL such as https://api.example.com"
            )
        return value.rstrip("/")

    @field_validator("api_version")
    @classmethod
    def _check_api_version(cls, value: str) -> str:
        """The header carries a date; catch typos before the server answers 400."""
        import datetime as dt

        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError("INVOX_API_VERSION must be a date such as 2025-11-01") from None
        return value

    @property
    def environment(self) -> str:
        """What "the same API" means for never-pay-twice: the namespace, else the base URL."""
        return self.cache_namespace or self.base_url or ""

    def timeout(self) -> httpx.Timeout:
        """The httpx timeout built from the four settings."""
        return httpx.Timeout(
            connect=self.connect_timeout_s,
            read=self.read_timeout_s,
            write=self.write_timeout_s,
            pool=self.pool_timeout_s,
        )
