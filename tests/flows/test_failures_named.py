"""Issue 15: failed files named in the summary, console and HTML report; honest audio hours."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.sharding import aggregate
from invox_batch.cli._run import _print_summary

from ..flow_helpers import make_wav, run_flow, write_csv_manifest
from ..helpers import SandboxControl

SECONDS = 9.0  # one audio, listed three times


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_a_run_names_its_failed_files_and_counts_each_audio_once(
    sandbox: SandboxControl, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_wav(tmp_path / "one.wav", seed=7, seconds=SECONDS)
    rows = [{"audio_path": "one.wav", "file_id": f"dup{n}"} for n in range(3)]
    rows.append({"audio_path": "missing.wav", "file_id": "gone"})
    manifest = write_csv_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"

    first = run_flow(sandbox, manifest, out)
    assert first.state.is_failed() and first.calls["upload"] == 1
    summary = first.summary
    assert [(f["file_id"], f["error_type"]) for f in summary["failed_files"]] == [
        ("gone", "file_missing")
    ]
    assert "check audio_path in the manifest" in summary["failed_files"][0]["error_message"]
    hours = round(SECONDS / 3600, 4)
    assert summary["audio_hours"] == hours  # not 3 x 9 s
    assert (summary["audio_hours_paid"], summary["audio_hours_from_cache"]) == (hours, 0.0)
    page = (out / "reports" / f"{first.flow_run_id}.html").read_text()
    assert '<table id="failed">' in page and "<td>gone</td><td>file_missing</td>" in page

    _print_summary(summary, str(out))
    console = capsys.readouterr().out
    assert f"{hours:.4f} audio hours ({hours:.4f} paid in this run, 0.0000 from cache)" in console
    assert "failed files:\n  gone: file_missing\n" in console

    again = run_flow(sandbox, manifest, out)
    assert again.calls["upload"] == 0 and again.summary["audio_hours"] == hours
    assert (again.summary["audio_hours_paid"], again.summary["audio_hours_from_cache"]) == (
        0.0,
        hours,
    )


def test_the_console_names_a_screenful_then_says_where_the_rest_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = [
        {"file_id": f"f{n:02d}", "error_type": "not_audio", "error_message": "m"} for n in range(23)
    ]
    summary = {
        "rows": 23,
        "completed": 0,
        "failed": 23,
        "from_cache": 0,
        "error_types": {"not_audio": 23},
        "audio_hours": 0.0,
        "audio_hours_paid": 0.0,
        "audio_hours_from_cache": 0.0,
        "failed_files": failed,
        "wall_s": 1.0,
        "api_calls": {},
        "files_path": "f",
        "tables_path": "t",
        "flow_run_id": "run-1",
    }
    _print_summary(summary, str(tmp_path))
    lines = capsys.readouterr().out.splitlines()
    named = [line for line in lines if line.startswith("  f")]
    assert len(named) == 20 and named[-1] == "  f19: not_audio"
    assert f"  ... and 3 more; full list in {tmp_path / 'runs' / 'run-1.json'}" in lines


def test_a_sharded_parent_lists_every_childs_failed_files_and_sums_its_hours() -> None:
    def child(name: str, paid: float) -> dict[str, object]:
        return {
            "rows": 2,
            "failed": 1,
            "audio_hours": paid + 0.5,
            "audio_hours_paid": paid,
            "audio_hours_from_cache": 0.5,
            "failed_files": [{"file_id": name, "error_type": "timeout", "error_message": "m"}],
        }

    total = aggregate([child("a", 0.25), child("b", 0.125), {"rows": 0, "missing": "Crashed"}])
    assert [f["file_id"] for f in total["failed_files"]] == ["a", "b"]
    assert (total["audio_hours"], total["audio_hours_paid"], total["audio_hours_from_cache"]) == (
        1.375,
        0.375,
        1.0,
    )
