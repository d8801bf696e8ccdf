"""Where a report goes: the terminal and an HTML file for `invox-batch report`."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markdown import Markdown

from ..files import atomic_write
from ._load import load_report
from ._render import report_html, report_markdown


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
