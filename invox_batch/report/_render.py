"""The run report as markdown (CLI, run summary) and as a self-contained HTML page."""

from __future__ import annotations

import datetime as dt
from typing import Any

from jinja2 import Environment, PackageLoader

from ._load import RunReport
from ._plots import render_plots


def _seconds(value: float | None) -> str:
    """Seconds for the table, or a dash when nothing was measured."""
    return "-" if value is None else f"{value:.2f} s"


def _measures(report: RunReport) -> list[tuple[str, str]]:
    """The headline numbers, in reading order."""
    return [
        ("runs", str(len(report.runs))),
        ("rows", str(report.rows)),
        *((f"status: {k}", str(v)) for k, v in report.statuses.items()),
        ("audio hours completed (each unique audio once)", f"{report.audio_hours:.4f}"),
        ("audio hours paid (fresh results)", f"{report.audio_hours_paid:.4f}"),
        ("audio hours from cache", f"{report.audio_hours - report.audio_hours_paid:.4f}"),
        ("time to result p50 (fresh results)", _seconds(report.ttr_p50_s)),
        ("time to result p95 (fresh results)", _seconds(report.ttr_p95_s)),
        ("rows resubmitted (attempts > 1)", str(report.resubmitted_rows)),
        ("rows from cache", str(report.from_cache)),
        ("rows with a quality flag", str(sum(report.quality.values()))),
        *(
            [("files in the current transcripts table", str(report.current_transcripts))]
            if report.current_transcripts is not None
            else []
        ),
    ]


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def report_markdown(report: RunReport) -> str:
    """The summary as markdown: the CLI prints it, the flow attaches it to the Prefect run."""
    scope = f"run `{report.run_id}`" if report.run_id else f"{len(report.runs)} run(s)"
    lines = [f"# invox-batch report: {scope}", ""]
    lines += _table(("measure", "value"), _measures(report))
    if report.error_types:
        lines += ["", *_table(("error type", "rows"), list(report.error_types.items()))]
    if report.quality:
        lines += ["", *_table(("quality flag", "rows"), list(report.quality.items()))]
    runs = [
        (r["flow_run_id"], r["run_date"], r["rows"], r["completed"], r["failed"], r["from_cache"])
        for r in report.runs[:20]
    ]
    header = ("flow run", "run date", "rows", "completed", "failed", "from cache")
    lines += ["", *_table(header, runs)]
    return "\n".join(lines) + "\n"


def report_html(report: RunReport) -> str:
    """A self-contained HTML page (inline PNG plots, inline CSS, no network resources)."""
    env = Environment(loader=PackageLoader("invox_batch.report"), autoescape=True)
    return env.get_template("report.html.j2").render(
        report=report,
        measures=_measures(report),
        plots=render_plots(report.statuses, report.error_types, report.points),
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
