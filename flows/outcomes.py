"""The run summary's counts, from the ``files`` rows (pure functions)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

__all__ = ["summarise"]


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
