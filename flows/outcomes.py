"""Per-file outcomes and the rows and messages built from them (pure functions)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from invox import InvoxError
from invox_batch.audio import AudioCheck
from invox_batch.manifest import ManifestRow

__all__ = [
    "Outcome",
    "RunContext",
    "file_row",
    "outcome_from_error",
    "outcome_from_records",
    "segment_rows",
]


@dataclass(frozen=True)
class RunContext:
    """What every row of one flow run shares."""

    flow_run_id: str
    api_version: str


@dataclass(frozen=True)
class Outcome:
    """How one audio identity ended in this run."""

    status: Literal["completed", "failed"]
    error_type: str | None = None
    error_message: str | None = None
    request_id: str | None = None
    attempts: int = 0
    from_cache: bool = False
    submitted_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    segments: Sequence[Sequence[Any]] = field(default=(), repr=False)
    vtt: str | None = field(default=None, repr=False)

    @property
    def text(self) -> str | None:
        """The full transcript, or None when there is none."""
        if self.status != "completed":
            return None
        return " ".join(str(s[2]).strip() for s in self.segments if str(s[2]).strip())


def _timestamp(value: Any) -> dt.datetime | None:
    """Records keep ISO strings; rows want aware UTC datetimes."""
    if not isinstance(value, str):
        return None
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def outcome_from_records(
    upload: dict[str, Any], result: dict[str, Any], *, attempts: int, from_cache: bool
) -> Outcome:
    """Turn an upload record and its terminal result into an outcome."""
    completed = result.get("status") == "COMPLETED"
    message = result.get("error_message") or "the provider could not transcribe this file"
    return Outcome(
        status="completed" if completed else "failed",
        error_type=None if completed else "provider_error",
        error_message=None if completed else f"{message} (rerun to resubmit it)",
        request_id=str(result.get("request_id") or upload.get("request_id")),
        attempts=attempts,
        from_cache=from_cache,
        submitted_at=_timestamp(upload.get("uploaded_at")),
        completed_at=_timestamp(result.get("completed_at")),
        segments=result.get("segments") or (),
        vtt=result.get("vtt"),
    )


def outcome_from_error(
    error: InvoxError, *, upload: dict[str, Any] | None, attempts: int
) -> Outcome:
    """A failed outcome that keeps the request id, so a rerun resumes instead of re-uploading."""
    return Outcome(
        status="failed",
        error_type=error.error_type,
        error_message=error.message,
        request_id=(upload or {}).get("request_id"),
        attempts=attempts,
        submitted_at=_timestamp((upload or {}).get("uploaded_at")),
    )


def file_row(
    row: ManifestRow, check: AudioCheck, outcome: Outcome, run: RunContext
) -> dict[str, Any]:
    """One ``files`` row: identity, local facts, outcome, then the manifest's metadata."""
    return {
        "file_id": row.file_id,
        "row_index": row.index,
        "audio_path": row.audio_path,
        "sha256": check.sha256,
        "bytes": check.bytes,
        "mime_type": check.mime_type,
        "duration_s": check.duration_s,
        "status": outcome.status,
        "error_type": outcome.error_type,
        "error_message": outcome.error_message,
        "request_id": outcome.request_id,
        "text": outcome.text,
        "n_segments": len(outcome.segments) if outcome.status == "completed" else 0,
        "attempts": outcome.attempts,
        "from_cache": outcome.from_cache,
        "submitted_at": outcome.submitted_at,
        "completed_at": outcome.completed_at,
        "api_version": run.api_version,
        "flow_run_id": run.flow_run_id,
        "quality": [],
        **row.metadata,
    }


def segment_rows(
    row: ManifestRow, check: AudioCheck, outcome: Outcome, run: RunContext
) -> list[dict[str, Any]]:
    """The ``segments`` rows of one completed file, in order."""
    if outcome.status != "completed":
        return []
    return [
        {
            "file_id": row.file_id,
            "sha256": check.sha256,
            "request_id": outcome.request_id,
            "segment_index": index,
            "start_s": float(segment[0]),
            "end_s": float(segment[1]),
            "text": str(segment[2]),
            "speaker": segment[3] if len(segment) > 3 else None,
            "flow_run_id": run.flow_run_id,
        }
        for index, segment in enumerate(outcome.segments)
    ]
