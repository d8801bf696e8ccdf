"""The run summary: counts from a run's file rows, its markdown, and ``runs/<id>.json``."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..budget import budget_line
from ..files import atomic_write
from ._render import _table

# An error message is ours (what failed, what to do); cut anything longer than a line's worth.
_MESSAGE_CAP = 300
# Failed files named in a markdown summary or on the console (a screenful); the JSON has all.
FAILED_SHOWN = 20


def summarise(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counts an operator reads first: by status, by error type, cache hits, audio hours (each
    unique audio once, split into paid in this run and from cache), and the failed files."""
    status: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    cached = 0
    audio: dict[str, tuple[float, bool]] = {}  # sha256 -> (seconds, paid in this run)
    failed: list[dict[str, Any]] = []
    for row in rows:
        status[row["status"]] += 1
        if row["error_type"]:
            errors[row["error_type"]] += 1
        cached += bool(row["from_cache"])
        if row["status"] == "completed" and row["duration_s"]:
            key = row["sha256"] or f"row:{row['file_id']}"
            seconds, paid = audio.get(key, (0.0, False))
            audio[key] = (max(seconds, float(row["duration_s"])), paid or not row["from_cache"])
        elif row["status"] == "failed":
            failed.append(_failed_file(row))
    paid_s = sum(seconds for seconds, paid in audio.values() if paid)
    cached_s = sum(seconds for seconds, paid in audio.values() if not paid)
    return {
        "rows": sum(status.values()),
        "completed": status["completed"],
        "failed": status["failed"],
        "from_cache": cached,
        "error_types": dict(sorted(errors.items())),
        "audio_hours": round((paid_s + cached_s) / 3600, 4),
        "audio_hours_paid": round(paid_s / 3600, 4),
        "audio_hours_from_cache": round(cached_s / 3600, 4),
        "failed_files": failed,
    }


def _failed_file(row: dict[str, Any]) -> dict[str, Any]:
    """Which file failed and why, on one line (a files row's id, type and message; no text)."""
    message = " ".join(str(row["error_message"] or "").split())
    if len(message) > _MESSAGE_CAP:
        message = message[: _MESSAGE_CAP - 3] + "..."
    return {"file_id": row["file_id"], "error_type": row["error_type"], "error_message": message}


def summary_markdown(summary: dict[str, Any]) -> str:
    """The run summary as a short markdown page."""
    lines = [f"# transcribe-batch: {summary['completed']} of {summary['rows']} files completed", ""]
    measures = [
        ("completed", summary["completed"]),
        ("failed", summary["failed"]),
        ("from cache (no API call)", summary["from_cache"]),
        ("audio hours completed (each unique audio once)", summary["audio_hours"]),
        ("audio hours paid in this run", summary.get("audio_hours_paid", "-")),
        ("audio hours from cache", summary.get("audio_hours_from_cache", "-")),
        ("wall time (s)", summary["wall_s"]),
        *((f"API calls: {name}", n) for name, n in summary["api_calls"].items()),
    ]
    lines += _table(("measure", "value"), measures)
    if summary["error_types"]:
        lines += ["", *_table(("error type", "rows"), list(summary["error_types"].items()))]
    if summary.get("failed_files"):
        failed = [
            (f["file_id"], f["error_type"], f["error_message"]) for f in summary["failed_files"]
        ]
        lines += ["", *_table(("failed file", "error type", "message"), failed[:FAILED_SHOWN])]
        if len(failed) > FAILED_SHOWN:
            more = len(failed) - FAILED_SHOWN
            lines += ["", f"... and {more} more: `failed_files` in the run summary JSON"]
    if summary.get("budget"):
        lines += ["", budget_line(summary["budget"])]
    lines += ["", f"Log: `{summary['files_path']}`; current tables: `{summary['tables_path']}`"]
    return "\n".join(lines)


def write_summary(out: Path, flow_run_id: str, summary: dict[str, Any]) -> Path:
    """``<out>/runs/<flow_run_id>.json``, written atomically (the CLI reads it for exit codes)."""
    target = out / "runs" / f"{flow_run_id}.json"
    payload = json.dumps(summary, indent=2, default=str).encode()
    atomic_write(target, lambda handle: handle.write(payload))
    return target
