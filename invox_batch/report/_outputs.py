"""Where a report goes: a run's HTML page and summary section, or the terminal and a file."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown

from ..files import atomic_write
from ._load import load_report
from ._render import report_html, report_markdown


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


async def build_run_report(
    out: Path, flow_run_id: str, log: logging.Logger | logging.LoggerAdapter[logging.Logger]
) -> RunReportFiles | None:
    """The report, off the event loop; a report that fails to build never fails the run."""
    try:
        return await asyncio.to_thread(_build, out, flow_run_id)
    except Exception as exc:  # the dataset is written; a plot problem must not lose the run
        log.warning("run report not written: %s", type(exc).__name__, exc_info=exc)
        return None


def report_section(report: RunReportFiles | None, location: str | None) -> str:
    """The report's figures in markdown and where its HTML page is, as text: the Prefect UI
    cannot open a ``file://`` link, and a bucket's page needs its own credentials anyway."""
    if report is None or location is None:
        return ""
    where = location if "://" in location else str(Path(location).resolve())
    return f"{report.markdown}\nHTML report with plots: `{where}`\n"


def print_report(out: str, run_id: str | None, html: Path | None) -> None:
    """Markdown on stdout (rendered as tables on a terminal); the HTML written atomically."""
    report = load_report(out, run_id)
    text = report_markdown(report)
    console = Console()
    if console.is_terminal:
        console.print(Markdown(text))
    else:
        print(text, end="")
    if html is not None:
        page = report_html(report).encode()
        atomic_write(html, lambda handle: handle.write(page), private=False)
        console.print(f"HTML report: {html}", highlight=False, soft_wrap=True)
