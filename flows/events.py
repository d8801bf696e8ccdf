"""Prefect events a run emits, for automations: each failed file, and the run's end (no PHI).

Only identifiers and counts: a file's ``file_id`` and ``error_type``, never an error message
(the provider's may quote the audio), transcript text, token, key or URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect.events import emit_event
from prefect.runtime import deployment, flow_run

__all__ = ["FILE_FAILED", "RUN_FINISHED", "emit_run_events", "file_failed", "run_finished"]

FILE_FAILED = "invox-batch.file.failed"
RUN_FINISHED = "invox-batch.run.finished"
COUNTS = ("rows", "completed", "failed", "from_cache", "unique_audio")


def _where() -> dict[str, str]:
    """The labels that say which run and deployment (``local`` / ``none`` outside them)."""
    return {
        "flow_run_id": str(flow_run.id or "local"),
        "deployment": str(deployment.name or "none"),
    }


def file_failed(file_id: str, error_type: str | None) -> dict[str, Any]:
    """The ``invox-batch.file.failed`` event of one file, as ``emit_event`` keywords."""
    kind = error_type or "unknown"
    return {
        "event": FILE_FAILED,
        "resource": {
            "prefect.resource.id": f"invox-batch.file.{file_id}",
            "prefect.resource.name": file_id,
            "error_type": kind,
            **_where(),
        },
        "payload": {"file_id": file_id, "error_type": kind},
    }


def run_finished(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The ``invox-batch.run.finished`` event: counts by status and by error_type."""
    where = _where()
    failed = int(summary.get("failed") or 0)
    counts = {key: summary[key] for key in COUNTS if key in summary}
    return {
        "event": RUN_FINISHED,
        "resource": {
            "prefect.resource.id": f"invox-batch.run.{where['flow_run_id']}",
            "outcome": "failed-files" if failed else "all-completed",
            "failed": str(failed),
            **where,
        },
        "payload": {**counts, "error_types": dict(summary.get("error_types") or {})},
    }


def emit_run_events(summary: Mapping[str, Any], *, per_file: bool = True) -> None:
    """One event per failed file of this run (unless a parent's), then the run's end."""
    if per_file:
        for failed in summary.get("failed_files") or ():
            emit_event(**file_failed(str(failed["file_id"]), failed.get("error_type")))
    emit_event(**run_finished(summary))
