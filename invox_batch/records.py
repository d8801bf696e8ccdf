"""What one audio's work leaves behind: the ledger's records, its segments, and its outcome.

An :class:`UploadRecord` says the provider accepted the audio (under which request id, paid by
which flow run); a :class:`ResultRecord` holds the job's terminal result. Both are saved before
anything else is done with the file. An :class:`Outcome` is how the identity ended in this run,
from the records or from an error; the dataset's rows are built from it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from invox import InvoxError

from .errors import ErrorType

__all__ = ["Outcome", "ResultRecord", "Segment", "UploadRecord", "now_iso"]


def now_iso() -> str:
    """UTC now as ISO 8601, the form records are stored in."""
    return dt.datetime.now(dt.UTC).isoformat()


def _timestamp(value: str | None) -> dt.datetime | None:
    """Records keep ISO strings; rows want aware UTC datetimes."""
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


class Segment(NamedTuple):
    """One timed piece of a transcript; stored as a JSON list ``[start, end, text, speaker]``."""

    start: float
    end: float
    text: str
    speaker: str | None = None

    @classmethod
    def parse(cls, raw: Sequence[Any]) -> Segment:
        """A stored ``[start, end, text(, speaker)]`` list as a segment."""
        speaker = raw[3] if len(raw) > 3 else None
        return cls(float(raw[0]), float(raw[1]), str(raw[2]), speaker)


@dataclass(frozen=True)
class UploadRecord:
    """The provider accepted this audio: the request id to poll, and who paid for it."""

    request_id: str
    uploaded_at: str
    flow_run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UploadRecord:
        """A stored upload record (extra keys ignored)."""
        return cls(
            str(data["request_id"]), str(data.get("uploaded_at") or ""), data.get("flow_run_id")
        )


@dataclass(frozen=True)
class ResultRecord:
    """The terminal result of one upload, as the ledger keeps it."""

    request_id: str
    status: str
    segments: tuple[Segment, ...] = ()
    vtt: str | None = field(default=None, repr=False)
    error_message: str | None = None
    completed_at: str = field(default_factory=now_iso)

    @property
    def completed(self) -> bool:
        return self.status == "COMPLETED"

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "segments": [list(s) for s in self.segments]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResultRecord:
        """A stored result record (extra keys ignored)."""
        return cls(
            request_id=str(data["request_id"]),
            status=str(data["status"]),
            segments=tuple(Segment.parse(s) for s in data.get("segments") or ()),
            vtt=data.get("vtt"),
            error_message=data.get("error_message"),
            completed_at=str(data.get("completed_at") or ""),
        )


@dataclass(frozen=True)
class Outcome:
    """How one audio identity ended in this run."""

    status: Literal["completed", "failed"]
    error_type: ErrorType | None = None
    error_message: str | None = None
    request_id: str | None = None
    attempts: int = 0
    from_cache: bool = False
    submitted_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    segments: tuple[Segment, ...] = field(default=(), repr=False)
    vtt: str | None = field(default=None, repr=False)

    @classmethod
    def failed(cls, error_type: ErrorType, message: str, **known: Any) -> Outcome:
        """A failed outcome with its machine-readable type and what to do about it."""
        return cls(status="failed", error_type=error_type, error_message=message, **known)

    @classmethod
    def from_records(
        cls, upload: UploadRecord, result: ResultRecord, *, attempts: int, from_cache: bool
    ) -> Outcome:
        """Turn an upload record and its terminal result into an outcome."""
        message = result.error_message or "the provider could not transcribe this file"
        return cls(
            status="completed" if result.completed else "failed",
            error_type=None if result.completed else ErrorType.PROVIDER_ERROR,
            error_message=None if result.completed else f"{message} (rerun to resubmit it)",
            request_id=result.request_id or upload.request_id,
            attempts=attempts,
            from_cache=from_cache,
            submitted_at=_timestamp(upload.uploaded_at),
            completed_at=_timestamp(result.completed_at),
            segments=result.segments,
            vtt=result.vtt,
        )

    @classmethod
    def from_error(
        cls, error: InvoxError, *, upload: UploadRecord | None, attempts: int
    ) -> Outcome:
        """A failed outcome that keeps the request id, so a rerun resumes instead of re-uploading."""
        return cls.failed(
            ErrorType(error.error_type),
            error.message,
            request_id=upload.request_id if upload else None,
            attempts=attempts,
            submitted_at=_timestamp(upload.uploaded_at) if upload else None,
        )

    @property
    def text(self) -> str | None:
        """The full transcript, or None when there is none."""
        if self.status != "completed":
            return None
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())
