"""The run report and the run summary: DuckDB numbers, markdown, HTML with plots (no Prefect)."""

from ._load import RunReport, load_report
from ._outputs import print_report
from ._render import report_html, report_markdown

__all__ = ["RunReport", "load_report", "print_report", "report_html", "report_markdown"]
