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


def summarise(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counts an operator reads first: by status, by error type, cache hits, audio hours."""
    status: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    cached = 0
    seconds = 0.0
    for row in rows:
        status[row["status"]] += 1
        if row["error_type"]:
            errors[row["error_type"]] += 1
        cached += bool(row["from_cache"])
        if row["status"] == "completed" and row["duration_s"]:
            seconds += float(row["duration_s"])
    return {
        "rows": sum(status.values()),
        "completed": status["completed"],
        "failed": status["failed"],
        "from_cache": cached,
        "error_types": dict(sorted(errors.items())),
        "audio_hours": round(seconds / 3600, 4),
    }


def summary_markdown(summary: dict[str, Any]) -> str:
    """The run summary as a short markdown page."""
    lines = [f"# transcribe-batch: {summary['completed']} of {summary['rows']} files completed", ""]
    measures = [
        ("completed", summary["completed"]),
        ("failed", summary["failed"]),
        ("from cache (no API call)", summary["from_cache"]),
        ("audio hours completed", summary["audio_hours"]),
        ("wall time (s)", summary["wall_s"]),
        *((f"API calls: {name}", n) for name, n in summary["api_calls"].items()),
    ]
    lines += _table(("measure", "value"), measures)
    if summary["error_types"]:
        lines += ["", *_table(("error type", "rows"), list(summary["error_types"].items()))]
    if summary.get("budget"):
        lines += ["", budget_line(summary["budget"])]
    lines += ["", f"Parquet: `{summary['files_path']}` and `{summary['segments_path']}`"]
    return "\n".join(lines)


def write_summary(out: Path, flow_run_id: str, summary: dict[str, Any]) -> Path:
    """``<out>/runs/<flow_run_id>.json``, written atomically (the CLI reads it for exit codes)."""
    target = out / "runs" / f"{flow_run_id}.json"
    payload = json.dumps(summary, indent=2, default=str).encode()
    atomic_write(target, lambda handle: handle.write(payload))
    return target
