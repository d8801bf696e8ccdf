"""Benchmark results: the PASS/MISS table and the JSON files under ``bench/results/``."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

SIGNIFICANT = 4
# Issue 6's targets in report order: (limit, pass when measured >= limit rather than <=).
LIMITS: dict[str, tuple[float, bool]] = {
    "orchestration_overhead_ratio": (1.3, False),
    "status_calls_per_file": (1.2, False),
    "time_to_result_ratio": (1.10, False),
    "peak_rss_ratio_10k_to_1k": (1.5, False),
    "rerun_api_calls": (0.0, False),
    "rerun_wall_ratio": (0.10, False),
    "large_upload_rss_increase_mb": (50.0, False),
    "large_upload_throughput_vs_curl": (0.8, True),
    "adaptive_vs_tuned_wall_ratio": (1.3, False),
    "adaptive_429_share": (0.05, False),
    "heavy_tail_wall_ratio": (1.25, False),
    "heavy_tail_status_calls_per_file": (1.5, False),
    "ledger_ms_per_file_postgresql": (5.0, False),
    "ledger_locate_10k_s_postgresql": (2.0, False),
    "ledger_rerun_api_calls_postgresql": (0.0, False),
    "ledger_rerun_wall_ratio_postgresql": (0.10, False),
    # Issue 16: the current tables.
    "tables_bytes_ratio_5_runs": (1.2, False),
    "tables_merge_share": (0.10, False),
    "tables_read_pandas_10k_s": (1.0, False),
}


@dataclass(frozen=True)
class Result:
    """One target: measured against its limit; ``measured`` None when it could not be measured."""

    target: str
    measured: float | None
    limit: float
    at_least: bool = False  # pass when measured >= limit (throughput), else measured <= limit
    note: str = ""

    @property
    def passed(self) -> bool:
        """Within the limit; an unmeasured target never passes."""
        if self.measured is None or math.isnan(self.measured):
            return False
        return self.measured >= self.limit if self.at_least else self.measured <= self.limit


def result(target: str, measured: float | None, note: str = "") -> Result:
    """A target's figure with the limit and direction the issue sets for it."""
    limit, at_least = LIMITS[target]
    return Result(target, measured, limit, at_least=at_least, note=note)


def round_sig(value: float, digits: int = SIGNIFICANT) -> float:
    """``value`` to ``digits`` significant digits, so committed figures diff quietly."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def as_records(results: Sequence[Result]) -> list[dict[str, Any]]:
    """The machine-readable list, keys in a fixed order: target, measured, limit, pass."""
    return [
        {
            "target": r.target,
            "measured": None if r.measured is None else round_sig(r.measured),
            "limit": r.limit,
            "pass": r.passed,
        }
        for r in results
    ]


def format_table(results: Sequence[Result]) -> str:
    """A fixed-width table: target, measured, limit (with its direction), PASS/MISS, note."""
    lines = [f"{'target':34}{'measured':>12}  {'limit':>10}  {'result':6}  note"]
    for r in results:
        measured = "n/a" if r.measured is None else f"{round_sig(r.measured):g}"
        limit = f"{'>=' if r.at_least else '<='} {r.limit:g}"
        verdict = "PASS" if r.passed else "MISS"
        lines.append(f"{r.target:34}{measured:>12}  {limit:>10}  {verdict:6}  {r.note}".rstrip())
    return "\n".join(lines)


def timestamp(now: datetime | None = None) -> str:
    """UTC ``yyyymmddThhmmss``: sorts by time, safe in file names."""
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S")


def machine() -> dict[str, Any]:
    """Where the figures were measured: CPUs, model, RAM, Python, Prefect."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name"),
        "ram_gb": _ram_gb(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "prefect": _version("prefect"),
    }


def _proc_field(path: str, key: str) -> str:
    """The first ``key: value`` line of a /proc file, or empty."""
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return ""


def _ram_gb() -> float | None:
    """Total memory from /proc/meminfo (KiB) in GB, 3 significant digits."""
    total = _proc_field("/proc/meminfo", "MemTotal").split()
    return round_sig(int(total[0]) * 1024 / 1e9, 3) if total else None


def _version(package: str) -> str:
    """An installed distribution's version, or empty."""
    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def write_results(
    folder: Path,
    results: Sequence[Result],
    details: Mapping[str, Any],
    stamp: str,
    *,
    latest: bool = True,
) -> list[Path]:
    """``<stamp>.json`` (the list plus ``details``) and, for a full run, ``latest.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    records = as_records(results)
    dated = folder / f"{stamp}.json"
    body = {"results": records, "details": dict(details)}
    dated.write_text(json.dumps(body, indent=2, default=str) + "\n")
    if not latest:
        return [dated]
    newest = folder / "latest.json"
    newest.write_text(json.dumps(records, indent=2) + "\n")
    return [dated, newest]
