"""The run report of each flow run: an HTML page under ``reports/``, its markdown in the summary."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger

from invox_batch.files import atomic_write

# Every run draws a page: the package loads matplotlib with the flow, not in the run's wall time.
from invox_batch.report import load_report, report_html, report_markdown

__all__ = ["RunReportFiles", "build_run_report", "report_section"]


@dataclass(frozen=True)
class RunReportFiles:
    """The report of one run: its markdown, and the HTML written under ``reports/``."""

    markdown: str
    html: Path


def _build(out: Path, flow_run_id: str) -> RunReportFiles:
    """Query this run's rows, write ``<out>/reports/<flow_run_id>.html`` atomically."""
    report = load_report(out, flow_run_id)
    page = report_html(report).encode()
    target = out / "reports" / f"{flow_run_id}.html"
    atomic_write(target, lambda handle: handle.write(page))
    return RunReportFiles(report_markdown(report), target)


async def build_run_report(out: Path, flow_run_id: str) -> RunReportFiles | None:
    """The report, off the event loop; a report that fails to build never fails the run."""
    try:
        return await asyncio.to_thread(_build, out, flow_run_id)
    except Exception as exc:  # the dataset is written; a plot problem must not lose the run
        get_run_logger().warning("run report not written: %s", type(exc).__name__, exc_info=exc)
        return None


def _link(location: str) -> str:
    """A clickable link: local paths become file:// URIs."""
    return location if "://" in location else Path(location).resolve().as_uri()


def report_section(report: RunReportFiles | None, location: str | None) -> str:
    """The report's markdown and a link to its HTML page, for the run's summary artifact."""
    if report is None or location is None:
        return ""
    return f"{report.markdown}\n[HTML report with plots]({_link(location)})\n"
