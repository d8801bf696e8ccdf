"""Typed results of the endpoints, and the parsers that turn wire JSON into them.

Parsers accept every spelling the contract shows and turn anything else into a
``ResponseFormatError`` whose message names fields, never values (values may be transcript text).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ._exceptions import ResponseFormatError
from ._redact import redact_url

__all__ = [
    "TERMINAL_STATUSES",
    "PresignedUpload",
    "Segment",
    "Status",
    "Transcription",
    "parse_presigned_upload",
    "parse_transcription",
]

Status = Literal["PENDING", "COMPLETED", "ERROR"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"COMPLETED", "ERROR"})


class Segment(BaseModel):
    """One timed piece of transcript; ``speaker`` only comes with callbacks."""

    model_config = ConfigDict(frozen=True)

    start: float
    end: float
    text: str = Field(repr=False)
    speaker: str | None = None

    @field_validator("speaker", mode="before")
    @classmethod
    def _speaker_as_text(cls, value: Any) -> Any:
        """Callbacks show speakers as strings like "0"; accept bare numbers too."""
        return (
            str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        )


class PresignedUpload(BaseModel):
    """A one-shot upload slot: PUT the audio to ``presigned_url``; ``request_id`` is the job."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    presigned_url: str = Field(alias="presignedUrl", repr=False, min_length=1)
    request_id: str = Field(alias="requestId", min_length=1)

    @property
    def redacted_url(self) -> str:
        """The URL without its query string (the signature), safe for logs."""
        return redact_url(self.presigned_url)


class Transcription(BaseModel):
    """The state of one job as ``get-transcription`` reported it."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    status: Status
    segments: tuple[Segment, ...] = Field(default=(), repr=False)
    vtt: str | None = Field(default=None, repr=False)
    error_message: str | None = None
    retry_after_s: float | None = None  # a PENDING answer's Retry-After: the server's poll hint

    @property
    def is_terminal(self) -> bool:
        """True once polling can stop."""
        return self.status in TERMINAL_STATUSES

    @property
    def text(self) -> str:
        """The full transcript, segments joined by spaces."""
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())


def _describe(exc: ValidationError) -> str:
    """Field paths and error kinds only: pydantic's own text would echo the input values."""
    parts = [".".join(str(p) for p in err["loc"]) + f" ({err['type']})" for err in exc.errors()]
    return "; ".join(parts[:5]) + ("; ..." if len(parts) > 5 else "")


def _object(body: Any, what: str) -> dict[str, Any]:
    """The body as a JSON object, or a format error naming the endpoint."""
    if not isinstance(body, dict):
        raise ResponseFormatError(f"{what}: expected a JSON object, got {type(body).__name__}")
    return body


def _segments(raw: Any, what: str) -> tuple[Segment, ...]:
    """Validate the ``transcription`` array; null or absent means no segments yet."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ResponseFormatError(f"{what}: 'transcription' is not a list")
    try:
        return tuple(Segment.model_validate(item) for item in raw)
    except ValidationError as exc:
        raise ResponseFormatError(f"{what}: bad segment: {_describe(exc)}") from None


def _optional_text(body: dict[str, Any], key: str, what: str) -> str | None:
    """A string field that may be missing or null."""
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ResponseFormatError(f"{what}: '{key}' is not a string")


def _status(body: dict[str, Any], what: str) -> Status:
    """Read ``processingStatus``, falling back to ``transcriptionStatus`` (both are published)."""
    raw = body.get("processingStatus", body.get("transcriptionStatus"))
    if not isinstance(raw, str):
        raise ResponseFormatError(f"{what}: no processingStatus or transcriptionStatus")
    status = raw.strip().upper()
    if status not in ("PENDING", "COMPLETED", "ERROR"):
        raise ResponseFormatError(f"{what}: unknown status {status[:20]!r}")
    return status  # type: ignore[return-value]


def parse_transcription(request_id: str, body: Any) -> Transcription:
    """Turn a ``get-transcription`` body into a ``Transcription``."""
    what = "get-transcription response"
    data = _object(body, what)
    return Transcription(
        request_id=request_id,
        status=_status(data, what),
        segments=_segments(data.get("transcription"), what),
        vtt=_optional_text(data, "vttTranscription", what),
        error_message=_optional_text(data, "errorMessage", what),
    )


def parse_presigned_upload(body: Any) -> PresignedUpload:
    """Turn a ``generate-presigned-url`` body into a ``PresignedUpload``."""
    what = "generate-presigned-url response"
    try:
        return PresignedUpload.model_validate(_object(body, what))
    except ValidationError as exc:
        raise ResponseFormatError(f"{what}: {_describe(exc)}") from None
