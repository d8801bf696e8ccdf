"""The run report and the run summary: DuckDB numbers, markdown, HTML with plots (no Prefect).

Importing the package loads matplotlib: the flow imports it, so that cost is not in a run's time.
"""

from ._load import RunReport, load_report
from ._outputs import RunReportFiles, build_run_report, print_report, report_section
from ._render import report_html, report_markdown
from ._summary import summarise, summary_markdown, write_summary

__all__ = [
    "RunReport",
    "RunReportFiles",
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
