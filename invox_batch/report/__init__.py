"""The run report and run summary (no Prefect); importing it loads matplotlib, outside run time."""

from ._load import load_report
from ._outputs import build_run_report, print_report, report_section
from ._render import report_html, report_markdown
from ._summary import summarise, summary_markdown, write_summary

__all__ = [
    "build_run_report",
    "load_report",
    "print_report",
    "report_html",
    "report_markdown",
    "report_section",
    "summarise",
    "summary_markdown",
    "write_summary",
]
