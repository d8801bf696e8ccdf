"""Sandbox configuration: startup settings (env ``INVOX_SANDBOX_*``) and run-time fault knobs."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ENDPOINTS", "Endpoint", "Faults", "SandboxSettings", "parse_api_version"]

Endpoint = Literal["token", "presign", "upload", "status"]
ENDPOINTS: tuple[Endpoint, ...] = get_args(Endpoint)

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[float, Field(ge=0.0)]
Factor = Annotated[float, Field(gt=0.0)]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def parse_api_version(value: str) -> date | None:
    """A dated version (``YYYY-MM-DD``, a real calendar day) as a date, else None."""
    if not _VERSION.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


class Faults(BaseModel):
    """Fault injection knobs; replaceable at run time through ``PUT /_sandbox/faults``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rate_429: dict[Endpoint, Probability] = {}
    rate_503: dict[Endpoint, Probability] = {}
    rate_500: dict[Endpoint, Probability] = {}
    retry_after_s: Seconds = 1.0
    latency_s: dict[Endpoint, Seconds] = {}
    # Contract §10 #17: about 2 s before a job completes (tests and benchmarks set 0).
    processing_delay_s: tuple[Seconds, Seconds] = (1.5, 2.5)
    # Delay = audio duration x a factor drawn from (low, high); unreadable audio falls back to
    # ``processing_delay_s``. Models a provider that processes at 0.2-0.5x real time.
    processing_rtf: tuple[Factor, Factor] | None = None
    # A heavy tail: this share of jobs, chosen by their audio's sha256 (and the seed), takes
    # ``heavy_tail_s`` instead, as a real provider's queue sometimes does.
    heavy_tail_share: Probability = 0.0
    heavy_tail_s: Seconds = 20.0
    # API requests (token, presign, status; not the storage PUT) handled at once, latency
    # included; one more gets an immediate 429 with ``Retry-After``.
    max_inflight: Annotated[int, Field(ge=1)] | None = None
    token_ttl_s: Annotated[float, Field(gt=0.0)] = 7200.0
    url_ttl_s: Seconds = 900.0
    job_error_rate: Probability = 0.0
    job_error_sha256: list[str] = []
    drop_callback_rate: Probability = 0.0
    # The work is done, then the answer waits ``slow_s``: beyond the client's read timeout the
    # response is lost although the call succeeded (the ambiguous case for uploads).
    slow_rate: dict[Endpoint, Probability] = {}
    slow_s: Seconds = 0.0
    # An upload pauses this long mid-body (the URL's expiry is checked when the PUT starts).
    stall_upload_rate: Probability = 0.0
    stall_upload_s: Seconds = 0.0
    # A 200 whose JSON body breaks the contract (wrong types), to test the client's parsers.
    malformed_rate: dict[Endpoint, Probability] = {}
    seed: int | None = None
    # Not in the provider docs: lets client tests exercise "credential lacks BATCH-TRANSCRIBE".
    forbidden: bool = False

    @field_validator("job_error_sha256")
    @classmethod
    def _lowercase_hashes(cls, value: list[str]) -> list[str]:
        """Hashes compare case-insensitively, so a pasted upper-case digest still matches."""
        lowered = [v.strip().lower() for v in value]
        bad = [v for v in lowered if not _SHA256.fullmatch(v)]
        if bad:
            raise ValueError(f"not a hex sha256 digest: {bad[0]!r}")
        return lowered

    @model_validator(mode="after")
    def _check_rates_and_range(self) -> Faults:
        """Reject ranges that cannot be drawn from and rates that cannot both fire."""
        low, high = self.processing_delay_s
        if low > high:
            raise ValueError("processing_delay_s must be (low, high) with low <= high")
        if self.processing_rtf is not None and self.processing_rtf[0] > self.processing_rtf[1]:
            raise ValueError("processing_rtf must be (low, high) with low <= high")
        for endpoint in ENDPOINTS:
            total = sum(r.get(endpoint, 0.0) for r in (self.rate_429, self.rate_503, self.rate_500))
            if total > 1.0:
                raise ValueError(f"rate_429 + rate_503 + rate_500 for {endpoint!r} exceeds 1")
        return self


class SandboxSettings(BaseSettings):
    """Startup configuration of the sandbox; faults here are what ``/_sandbox/reset`` restores."""

    model_config = SettingsConfigDict(env_prefix="INVOX_SANDBOX_", env_nested_delimiter="__")

    app_id: str = "sandbox-app"
    api_key: str = "sandbox-key"
    processing: Literal["asr", "instant"] = "asr"
    asr_model: Literal["clinical", "general"] = "clinical"
    asr_workers: Annotated[int, Field(ge=1)] = 1
    token_path: str = "/api/v1/token"
    default_api_version: str = "2025-10-01"
    status_field: Literal["both", "processingStatus", "transcriptionStatus"] = "both"
    normalise_error_messages: bool = False
    forbidden_error_type: str = "forbidden"
    max_upload_bytes: Annotated[int, Field(ge=0)] = 500 * 1024 * 1024
    result_ttl_s: Annotated[float, Field(gt=0.0)] | None = None
    callback_secret: str = "sandbox-callback-secret"
    callback_api_key: str = "sandbox-callback-key"
    callback_timeout_s: Annotated[float, Field(gt=0.0)] = 30.0
    callback_retries: Annotated[int, Field(ge=0)] = 3
    callback_backoff_s: Seconds = 1.0
    callback_on_error: bool = False
    upload_dir: Path | None = None
    # Leak tests: issue this exact token, and make every instant transcript segment this text.
    fixed_token: str | None = None
    instant_text: str | None = None
    faults: Faults = Faults()

    @field_validator("token_path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        """Starlette routes must start with a slash, and must not shadow the sandbox's own."""
        if not value.startswith("/") or value.startswith(("/_sandbox/", "/_upload/")):
            raise ValueError(
                "token_path must start with '/' and not be under /_sandbox/ or /_upload/"
            )
        return value

    @field_validator("default_api_version")
    @classmethod
    def _dated_version(cls, value: str) -> str:
        """The default stands in for the header, so it must be a valid header value."""
        if parse_api_version(value) is None:
            raise ValueError("default_api_version must look like YYYY-MM-DD")
        return value
