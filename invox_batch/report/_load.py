"""The run report's numbers: DuckDB over the per-run log, the current tables' size; never text."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from invox import InvoxError

from ..errors import ReportError
from ..output import Output
from ..tables import TRANSCRIPTS, Tables

# Plots draw at most this many rows (the newest); the numbers always cover every row.
PLOT_ROW_CAP = 20_000
# The failed-files table names at most this many (the Parquet has every one).
FAILED_ROW_CAP = 500


@dataclass(frozen=True)
class RunReport:
    """Everything the report shows, already aggregated."""

    out: str
    run_id: str | None
    runs: list[dict[str, Any]]
    statuses: dict[str, int]
    error_types: dict[str, int]
    audio_hours: float
    ttr_p50_s: float | None
    ttr_p95_s: float | None
    resubmitted_rows: int
    from_cache: int
    quality: dict[str, int]
    points: list[dict[str, Any]] = field(default_factory=list, repr=False)
    failed_files: list[dict[str, Any]] = field(default_factory=list, repr=False)
    audio_hours_paid: float = 0.0
    current_transcripts: int | None = None

    @property
    def rows(self) -> int:
        """Rows in the selection."""
        return sum(self.statuses.values())


def _part_files(out: str | Path, parts: str) -> tuple[list[str], Any]:
    """The ``files`` parts named ``parts`` under any location ``run`` writes, as paths DuckDB
    reads, and the fsspec filesystem DuckDB must read them through (None for a local folder)."""
    try:
        output = Output.parse(str(out))
    except InvoxError as exc:
        raise ReportError(exc.message) from None
    if output.local is not None:
        return sorted(str(p) for p in output.local.glob(f"files/*/{parts}")), None
    try:
        found = output.fs.glob(f"{output.root}/files/*/{parts}")
    except Exception as exc:  # any backend's failure (credentials, network): one line
        text = " ".join(str(exc).split())[:200]
        raise ReportError(f"cannot read {out}: {type(exc).__name__}: {text}") from None
    return sorted(output.fs.unstrip_protocol(p) for p in found), output.fs


def _source(files: list[str]) -> str:
    """The files table as a DuckDB relation over the given parts of every run-date partition."""
    paths = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return (
        f"(SELECT * FROM read_parquet([{paths}], hive_partitioning = true, "
        "union_by_name = true) WHERE $run IS NULL OR flow_run_id = $run)"
    )


_TTR = "epoch(completed_at - submitted_at)"
# Completed audio, each unique audio (sha256) once per group, and whether any of it was paid for.
_UNIQUE = """(SELECT flow_run_id, coalesce(sha256, file_id) AS audio, max(duration_s) AS seconds,
    bool_or(NOT from_cache) AS paid FROM {src} WHERE status = 'completed' GROUP BY ALL)"""
_FRESH = "status = 'completed' AND NOT from_cache AND submitted_at IS NOT NULL"


def _query(con: duckdb.DuckDBPyConnection, sql: str, run: str | None) -> list[tuple[Any, ...]]:
    """Rows of one query, the run id bound as a parameter."""
    return con.execute(sql, {"run": run}).fetchall()


def _runs(con: duckdb.DuckDBPyConnection, src: str, run: str | None) -> list[dict[str, Any]]:
    """One line per flow run, newest first."""
    sql = f"""
        SELECT flow_run_id, min(run_date)::VARCHAR, count(*),
               count(*) FILTER (status = 'completed'), count(*) FILTER (status = 'failed'),
               count(*) FILTER (from_cache)
        FROM {src} GROUP BY flow_run_id
        ORDER BY max(run_date) DESC, max(completed_at) DESC NULLS LAST, flow_run_id"""
    keys = ("flow_run_id", "run_date", "rows", "completed", "failed", "from_cache")
    runs = [dict(zip(keys, row, strict=True)) for row in _query(con, sql, run)]
    hours_sql = f"SELECT flow_run_id, sum(seconds) / 3600 FROM {_UNIQUE.format(src=src)} GROUP BY 1"
    hours = {str(run_id): float(h or 0.0) for run_id, h in _query(con, hours_sql, run)}
    return [{**r, "audio_hours": hours.get(str(r["flow_run_id"]), 0.0)} for r in runs]


def _hours(con: duckdb.DuckDBPyConnection, src: str, run: str | None) -> tuple[float, float]:
    """Completed audio hours, each unique audio once over the selection, and the part paid for."""
    unique = f"""(SELECT audio, max(seconds) AS seconds, bool_or(paid) AS paid
        FROM {_UNIQUE.format(src=src)} GROUP BY audio)"""
    sql = f"""SELECT coalesce(sum(seconds), 0) / 3600,
        coalesce(sum(seconds) FILTER (paid), 0) / 3600 FROM {unique}"""
    ((total, paid),) = _query(con, sql, run)
    return float(total), float(paid)


def _counts(con: duckdb.DuckDBPyConnection, sql: str, run: str | None) -> dict[str, int]:
    """A two-column query as an ordered mapping."""
    return {str(key): int(n) for key, n in _query(con, sql, run)}


def _points(con: duckdb.DuckDBPyConnection, src: str, run: str | None) -> list[dict[str, Any]]:
    """Per-row facts the plots need (fresh completed rows: cached rows took no time)."""
    sql = f"""
        SELECT flow_run_id, duration_s, {_TTR}, submitted_at, completed_at
        FROM {src} WHERE {_FRESH} AND completed_at IS NOT NULL
        ORDER BY completed_at DESC LIMIT {PLOT_ROW_CAP}"""
    keys = ("flow_run_id", "duration_s", "ttr_s", "submitted_at", "completed_at")
    return [dict(zip(keys, row, strict=True)) for row in _query(con, sql, run)]


def _failed(con: duckdb.DuckDBPyConnection, src: str, run: str | None) -> list[dict[str, Any]]:
    """Which files failed and why (id, type, message: never the transcript), newest run first."""
    sql = f"""
        SELECT file_id, error_type, error_message, flow_run_id
        FROM {src} WHERE status = 'failed'
        ORDER BY run_date DESC, flow_run_id, row_index LIMIT {FAILED_ROW_CAP}"""
    keys = ("file_id", "error_type", "error_message", "flow_run_id")
    return [dict(zip(keys, row, strict=True)) for row in _query(con, sql, run)]


def _current_transcripts(out: str | Path) -> int | None:
    """Files in the current transcripts table; None when there is none (or it cannot be read)."""
    try:
        return Tables.of(Output.parse(str(out))).count(TRANSCRIPTS)
    except Exception:  # the log's report must not fail on the tables
        return None


def load_report(out: str | Path, run_id: str | None = None) -> RunReport:
    """Aggregate the dataset under ``out`` (one run with ``run_id``); raises ReportError."""
    every, fs = _part_files(out, "*.parquet")
    if not every:
        raise ReportError(f"no Parquet dataset under {out}/files: run `invox-batch run` first")
    parts = f"{run_id}.parquet" if run_id else "*.parquet"  # a run's rows are in its own parts
    files = _part_files(out, parts)[0] if run_id else every
    if not files:
        raise ReportError(f"run {run_id} is not in {out}: see `invox-batch report {out}`")
    src = _source(files)
    with duckdb.connect() as con:
        if fs is not None:
            con.register_filesystem(fs)  # DuckDB reads s3://, gs://, memory://... through fsspec
        runs = _runs(con, src, run_id)
        if not runs:
            raise ReportError(f"run {run_id} is not in {out}: see `invox-batch report {out}`")
        statuses = _counts(con, f"SELECT status, count(*) FROM {src} GROUP BY 1 ORDER BY 1", run_id)
        errors = _counts(
            con,
            f"SELECT error_type, count(*) FROM {src} WHERE error_type IS NOT NULL "
            "GROUP BY 1 ORDER BY 2 DESC, 1",
            run_id,
        )
        flags = _counts(
            con,
            f"SELECT flag, count(*) FROM (SELECT unnest(quality) AS flag FROM {src}) "
            "GROUP BY 1 ORDER BY 2 DESC, 1",
            run_id,
        )
        ((p50, p95, resubmitted, cached),) = _query(
            con,
            f"""SELECT quantile_cont({_TTR}, 0.5) FILTER ({_FRESH}),
                       quantile_cont({_TTR}, 0.95) FILTER ({_FRESH}),
                       count(*) FILTER (attempts > 1), count(*) FILTER (from_cache)
                FROM {src}""",
            run_id,
        )
        hours, paid = _hours(con, src, run_id)
        points = _points(con, src, run_id)
        failed = _failed(con, src, run_id)
    return RunReport(
        str(out),
        run_id,
        runs,
        statuses,
        errors,
        float(hours),
        p50,
        p95,
        resubmitted,
        cached,
        flags,
        points,
        failed_files=failed,
        audio_hours_paid=paid,
        current_transcripts=_current_transcripts(out),
    )
