"""The run report over a real Parquet dataset: numbers, CLI, self-contained HTML, Chromium."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image, ImageStat
from typer.testing import CliRunner

from invox_batch.cli import app
from invox_batch.dataset import write_run
from invox_batch.errors import ReportError
from invox_batch.report import (
    build_run_report,
    load_report,
    report_html,
    report_markdown,
    report_section,
    summarise,
    summary_markdown,
    write_summary,
)

from .test_dataset import DAY1, DAY2, RUN_A, RUN_B, T0, file_row

CHROMIUM = Path("/usr/bin/chromium")
SECRET_TEXT = "patient reports mild chest pain"  # the rows' transcript: never in a report


def _at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Two runs: A with fresh results, failures and flags; B served from cache."""
    fresh = [
        file_row(
            f"a{n}",
            index=n,
            duration_s=10.0 + n,
            completed_at=_at(2.0 * (n + 1)),
            sha256=f"{n:064x}",
        )
        for n in range(10)
    ]
    fresh[0]["quality"] = ["short_transcript", "long_silence"]
    fresh[1]["attempts"] = 2
    failed = [
        file_row("t", index=10, status="failed", error_type="timeout", completed_at=None),
        file_row(
            "b",
            index=11,
            status="failed",
            error_type="budget_exceeded",
            submitted_at=None,
            completed_at=None,
        ),
    ]
    write_run(tmp_path, RUN_A, DAY1, fresh + failed, pa.schema([]))
    cached = [  # the same audio as a0..a2 of run A, now from cache
        file_row(f"a{n}", run=RUN_B, index=n, from_cache=True, sha256=f"{n:064x}") for n in range(3)
    ]
    write_run(tmp_path, RUN_B, DAY2, cached, pa.schema([]))
    return tmp_path


def test_report_numbers_for_one_run_and_for_all(dataset: Path) -> None:
    one = load_report(dataset, RUN_A)
    assert one.statuses == {"completed": 10, "failed": 2}
    assert one.error_types == {"budget_exceeded": 1, "timeout": 1}
    assert one.quality == {"long_silence": 1, "short_transcript": 1}
    assert one.ttr_p50_s == pytest.approx(11.0) and one.ttr_p95_s == pytest.approx(19.1)
    assert one.resubmitted_rows == 1 and one.from_cache == 0
    assert one.audio_hours == pytest.approx(sum(10.0 + n for n in range(10)) / 3600)
    assert len(one.points) == 10

    every = load_report(dataset)
    assert [r["flow_run_id"] for r in every.runs] == [RUN_B, RUN_A]  # newest run date first
    assert every.from_cache == 3 and every.rows == 15 and every.ttr_p50_s == one.ttr_p50_s
    assert one.audio_hours_paid == one.audio_hours
    assert every.audio_hours == pytest.approx(one.audio_hours)  # run B's audio is run A's
    assert every.audio_hours_paid == pytest.approx(one.audio_hours)
    cached = load_report(dataset, RUN_B)
    assert cached.audio_hours == pytest.approx(3 * 4.25 / 3600) and cached.audio_hours_paid == 0.0
    assert [r["audio_hours"] for r in every.runs] == pytest.approx([3 * 4.25 / 3600, 145 / 3600])


def test_report_hours_count_one_audio_listed_many_times_once(tmp_path: Path) -> None:
    rows = [file_row(f"d{n}", index=n, duration_s=1.0, sha256="e" * 64) for n in range(40)]
    write_run(tmp_path, RUN_A, DAY1, rows, pa.schema([]))
    report = load_report(tmp_path, RUN_A)
    assert report.audio_hours == pytest.approx(1 / 3600) and report.runs[0]["audio_hours"] == (
        pytest.approx(1 / 3600)
    )
    assert "| audio hours completed (each unique audio once) | 0.0003 |" in report_markdown(report)


def test_missing_dataset_or_run_is_a_clear_error(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="run `invox-batch run` first"):
        load_report(tmp_path / "empty")
    with pytest.raises(ReportError, match="is not in"):
        load_report(dataset, "no-such-run")


def test_report_command_prints_the_summary_and_writes_html(dataset: Path, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    done = CliRunner().invoke(app, ["report", str(dataset), "--run", RUN_A, "--html", str(html)])
    assert done.exit_code == 0, done.output
    assert "| status: failed | 2 |" in done.output and "| timeout | 1 |" in done.output
    assert "| time to result p50 (fresh results) | 11.00 s |" in done.output
    assert html.is_file() and SECRET_TEXT not in done.output

    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "run `invox-batch run` first" in missing.output


def test_html_is_self_contained_with_four_plots_and_no_transcripts(dataset: Path) -> None:
    page = report_html(load_report(dataset))
    assert (
        len(
            re.findall(
                r'<img class="plot" id="plot-[a-z_]+" [^>]*src="data:image/png;base64,', page
            )
        )
        == 4
    )
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page
    assert SECRET_TEXT not in page and SECRET_TEXT not in report_markdown(load_report(dataset))
    assert len(page) < 400_000


def test_a_cached_run_shows_titled_placeholders_instead_of_empty_plots(dataset: Path) -> None:
    page = report_html(load_report(dataset, RUN_B))
    sources = dict(re.findall(r'<img class="plot" id="plot-([a-z_]+)" [^>]*src="([^"]+)"', page))
    assert list(sources) == ["status", "time_to_result", "throughput", "duration_vs_time"]
    assert sources.pop("status").startswith("data:image/png;base64,")
    titles = ["Time to result", "Throughput over the run", "Audio duration vs processing time"]
    for uri, title in zip(sources.values(), titles, strict=True):
        kind, _, data = uri.partition(";base64,")
        svg = base64.b64decode(data).decode()
        assert kind == "data:image/svg+xml" and f">{title}</text>" in svg
        assert "no fresh results in this selection" in svg


def test_run_report_writes_the_page_and_the_summary_section(dataset: Path) -> None:
    built = asyncio.run(build_run_report(dataset, RUN_A, logging.getLogger(__name__)))
    assert built is not None and built.html == dataset / "reports" / f"{RUN_A}.html"
    assert built.html.read_text().count('<img class="plot"') == 4
    section = report_section(built, str(built.html))
    assert section.startswith(f"# invox-batch report: run `{RUN_A}`")
    assert f"HTML report with plots: `{built.html.resolve()}`" in section
    assert "file://" not in section  # the Prefect UI cannot open it
    assert report_section(None, str(built.html)) == "" and report_section(built, None) == ""


def test_a_run_report_that_cannot_be_built_warns_and_never_fails_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.LoggerAdapter(logging.getLogger("run-report-test"))
    with caplog.at_level(logging.WARNING, logger="run-report-test"):
        built = asyncio.run(build_run_report(tmp_path, "no-such-run", log))
    assert built is None and not (tmp_path / "reports").exists()
    assert caplog.messages == ["run report not written: ReportError"]
    assert caplog.records[0].exc_info is not None


def test_run_summary_counts_its_rows_and_is_written_without_transcripts(tmp_path: Path) -> None:
    rows = [
        file_row("a", index=0, duration_s=1800.0, sha256="a" * 64),
        file_row("b", index=1, duration_s=1800.0, sha256="b" * 64, from_cache=True),
        file_row(
            "t", index=2, status="failed", error_type="timeout", text=None, error_message="late"
        ),
    ]
    counts = summarise(rows)
    assert counts == {
        "rows": 3,
        "completed": 2,
        "failed": 1,
        "from_cache": 1,
        "error_types": {"timeout": 1},
        "audio_hours": 1.0,
        "audio_hours_paid": 0.5,
        "audio_hours_from_cache": 0.5,
        "failed_files": [{"file_id": "t", "error_type": "timeout", "error_message": "late"}],
    }
    paths = {"files_path": "files.parquet", "tables_path": "tables"}
    summary = {**counts, "wall_s": 1.5, "api_calls": {"upload": 1}, **paths}
    text = summary_markdown(summary)
    assert text.startswith("# transcribe-batch: 2 of 3 files completed\n\n| measure | value |\n")
    assert "| API calls: upload | 1 |" in text and "| timeout | 1 |" in text
    assert "| t | timeout | late |" in text and "| audio hours paid in this run | 0.5 |" in text
    assert text.endswith("Log: `files.parquet`; current tables: `tables`")
    written = write_summary(tmp_path, RUN_A, summary)
    assert written == tmp_path / "runs" / f"{RUN_A}.json"
    assert json.loads(written.read_text()) == summary and SECRET_TEXT not in written.read_text()


def test_run_summary_counts_each_unique_audio_once_and_names_failed_files() -> None:
    """40 rows of one 1 s audio are 1 s, not 40; failures are named, with no transcript text."""
    one = "c" * 64
    rows = [file_row(f"dup{n}", index=n, duration_s=1.0, sha256=one) for n in range(40)]
    rows += [file_row("old", index=40, duration_s=3600.0, sha256="d" * 64, from_cache=True)]
    rows += [
        file_row(
            f"bad{n}",
            index=41 + n,
            status="failed",
            error_type="file_missing",
            error_message=f"audio file not found:\n/audio/bad{n}.wav " + "x" * 400,
            text=SECRET_TEXT,  # a failed row never carries text; even if it did, it is not copied
            sha256=None,
        )
        for n in range(25)
    ]
    counts = summarise(rows)
    assert counts["audio_hours"] == round(3601 / 3600, 4)
    assert counts["audio_hours_paid"] == 0.0003 and counts["audio_hours_from_cache"] == 1.0
    failed = counts["failed_files"]
    assert [f["file_id"] for f in failed] == [f"bad{n}" for n in range(25)]
    assert {tuple(f) for f in failed} == {("file_id", "error_type", "error_message")}
    assert failed[0]["error_message"].startswith("audio file not found: /audio/bad0.wav x")
    assert len(failed[0]["error_message"]) == 300 and failed[0]["error_message"].endswith("...")
    assert SECRET_TEXT not in json.dumps(counts)
    summary = {**counts, "wall_s": 1.0, "api_calls": {}, "files_path": "f", "tables_path": "t"}
    text = summary_markdown(summary)
    assert "| bad19 | file_missing |" in text and "| bad20 |" not in text
    assert "... and 5 more: `failed_files` in the run summary JSON" in text


def test_html_report_names_the_failed_files_without_transcripts(dataset: Path) -> None:
    report = load_report(dataset, RUN_A)
    assert [(f["file_id"], f["error_type"]) for f in report.failed_files] == [
        ("t", "timeout"),
        ("b", "budget_exceeded"),
    ]
    page = report_html(report)
    table = page[page.index('<table id="failed">') :]
    table = table[: table.index("</table>")]
    assert "<td>t</td><td>timeout</td>" in table and "<td>b</td><td>budget_exceeded</td>" in table
    assert SECRET_TEXT not in page
    assert '<table id="failed">' not in report_html(load_report(dataset, RUN_B))


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run(
        [str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=120, check=True
    )


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_html_report_renders_in_headless_chromium(dataset: Path, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    html.write_text(report_html(load_report(dataset)))
    shot = tmp_path / "shot.png"
    _chromium(
        f"--screenshot={shot}", "--window-size=1000,1100", html.as_uri(), profile=tmp_path / "p1"
    )
    with Image.open(shot) as image:
        grey = image.convert("L")
        assert grey.size == (1000, 1100)
        assert ImageStat.Stat(grey).stddev[0] > 20  # not a blank page
        colours = image.convert("RGB").resize((250, 275)).getcolors(250 * 275) or []
        assert len(colours) > 50  # plots, not just black text on white

    dom = _chromium("--dump-dom", html.as_uri(), profile=tmp_path / "p2").stdout
    plots = re.findall(r'<img class="plot" id="plot-([a-z_]+)"', dom)
    assert plots == ["status", "time_to_result", "throughput", "duration_vs_time"]
    shutil.rmtree(tmp_path / "p1", ignore_errors=True)
