"""validate_manifest and render_report: per-row problems, totals, no API, no leftovers."""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import fsspec
import numpy as np
import pytest
import soundfile

from invox import DEFAULT_MIME_TYPES
from invox_batch.manifest import ManifestError
from invox_batch.validate import ValidationReport, render_report, validate_manifest

from ..conftest import SAMPLES

MIME = dict(DEFAULT_MIME_TYPES)


def audio_bytes(fmt: str, seconds: float) -> bytes:
    """A tone of the given length encoded by libsndfile."""
    tone = (0.1 * np.sin(np.arange(int(8000 * seconds)) * 0.3)).astype("float32")
    buffer = io.BytesIO()
    soundfile.write(buffer, tone, 8000, format=fmt)
    return buffer.getvalue()


def write_csv(path: Path, rows: Sequence[Sequence[str]]) -> Path:
    """A UTF-8 CSV written the standard way."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def rendered(report: ValidationReport) -> list[str]:
    """render_report's output, line by line."""
    out = io.StringIO()
    render_report(report, out)
    return out.getvalue().splitlines()


@pytest.fixture
def memory_root() -> Iterator[str]:
    """A private folder on fsspec's in-process memory filesystem, removed afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"/v-{uuid.uuid4().hex}"
    yield root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_committed_sample_validates_clean(tmp_path: Path) -> None:
    report = validate_manifest(str(SAMPLES / "manifest.csv"), MIME, tmp_path)
    assert (len(report.good), len(report.bad), report.unknown_duration) == (8, 0, 0)
    assert report.total_duration_s == pytest.approx(36.5, abs=1.0)
    sizes = sum((SAMPLES / f).stat().st_size for f in os.listdir(SAMPLES) if f.startswith("visit-"))
    assert report.total_bytes == sizes
    assert all(check.sha256 is None for _, check in report.rows)  # validation never hashes
    lines = rendered(report)
    assert lines[0] == "8 rows: 8 ok, 0 bad"
    assert (
        lines[1].startswith("total audio duration: 0:00:3") and "(0.01 h) over 8 files" in lines[1]
    )
    assert lines[2] == f"total size: {sizes / 1024:.1f} KiB ({sizes:,} bytes)"


def test_bad_rows_are_listed_and_left_out_of_the_totals(tmp_path: Path) -> None:
    (tmp_path / "good.wav").write_bytes(audio_bytes("WAV", 2.0))
    (tmp_path / "garbage.wav").write_bytes(os.urandom(3000))
    (tmp_path / "memo.m4a").write_bytes(
        b"\x00\x00\x00\x14ftypM4A \x00\x00\x02\x00M4A " + b"\x00" * 100
    )
    (tmp_path / "folder.wav").mkdir()
    rows = [
        ["audio_path", "file_id"],
        ["good.wav", "visit-001"],
        ["gone.wav", "visit-002"],
        ["garbage.wav", "visit-003"],
        ["folder.wav", "visit-004"],
        ["memo.m4a", "visit-005"],
        ["", "visit-006"],
    ]
    report = validate_manifest(str(write_csv(tmp_path / "m.csv", rows)), MIME, tmp_path / "spool")
    assert [row.file_id for row, _ in report.good] == ["visit-001", "visit-005"]
    assert report.total_duration_s == pytest.approx(2.0)
    assert report.unknown_duration == 1
    lines = rendered(report)
    assert lines[0] == (
        f"row 2 visit-002: [file_missing] audio file not found: {tmp_path / 'gone.wav'} "
        "(check audio_path in the manifest)"
    )
    assert lines[1].startswith("row 3 visit-003: [not_audio] not a recognisable audio file: ")
    assert lines[2].startswith("row 4 visit-004: [not_a_file] ")
    assert lines[3].startswith("row 6 visit-006: [bad_manifest_row] audio_path is empty")
    assert lines[4] == "6 rows: 2 ok, 4 bad"
    assert lines[5] == (
        "total audio duration: 0:00:02 (0.00 h) over 1 file; unknown for 1 (M4A/WebM: not decodable here)"
    )


def test_each_bad_row_stays_on_one_line(tmp_path: Path) -> None:
    rows = [["audio_path", "file_id"], ["line\nbreak.wav", "id\r\nwith break"]]
    lines = rendered(validate_manifest(str(write_csv(tmp_path / "m.csv", rows)), MIME, tmp_path))
    assert lines[0].startswith("row 1 id\\r\\nwith break: [file_missing] ")
    assert "line\\nbreak.wav" in lines[0]
    assert lines[1] == "1 row: 0 ok, 1 bad"


def test_hours_are_shown_past_one_hour() -> None:
    from invox_batch.audio import AudioCheck
    from invox_batch.manifest import ManifestRow

    row = ManifestRow(0, "f", "a.wav", "/a.wav", None, {}, None)
    check = AudioCheck(Path("/a.wav"), None, 3 * 1024**3, "audio/wav", 5025.4, None, None)
    lines = rendered(ValidationReport([(row, check)]))
    assert lines[1] == "total audio duration: 1:23:45 (1.40 h) over 1 file"
    assert lines[2] == "total size: 3.0 GiB (3,221,225,472 bytes)"


def test_whole_manifest_problems_raise(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", [["path"], ["a.wav"]])
    with pytest.raises(ManifestError, match="no audio_path column"):
        validate_manifest(str(path), MIME, tmp_path)


def test_remote_audio_leaves_no_spooled_copies(tmp_path: Path, memory_root: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{memory_root}/a.flac", audio_bytes("FLAC", 1.0))
    fs.pipe(f"{memory_root}/b.wav", os.urandom(1000))
    fs.pipe(f"{memory_root}/m.jsonl", b'{"audio_path": "a.flac"}\n{"audio_path": "b.wav"}\n')
    spool = tmp_path / "spool"
    report = validate_manifest(f"memory:/{memory_root}/m.jsonl", MIME, spool)
    assert [check.error_type for _, check in report.rows] == [None, "not_audio"]
    assert report.total_duration_s == pytest.approx(1.0)
    assert all(check.local_path is None for _, check in report.rows)
    assert list(spool.iterdir()) == []


def test_duplicate_audio_counts_once_in_the_totals_and_the_cost(tmp_path: Path) -> None:
    from invox_batch.budget import cost_line

    one = audio_bytes("WAV", 2.0)
    (tmp_path / "one.wav").write_bytes(one)
    (tmp_path / "copy.wav").write_bytes(one)  # the same audio under another name
    (tmp_path / "other.wav").write_bytes(audio_bytes("WAV", 2.0)[:-2] + b"\x01\x02")  # same size
    rows = [["audio_path", "file_id"], ["one.wav", "a"], ["one.wav", "b"], ["copy.wav", "c"]]
    rows += [["other.wav", "d"]]
    report = validate_manifest(str(write_csv(tmp_path / "m.csv", rows)), MIME, tmp_path / "spool")
    assert (len(report.good), len(report.unique), report.duplicates) == (4, 2, 2)
    assert report.total_duration_s == pytest.approx(4.0)
    assert report.total_bytes == 2 * len(one)
    assert all(check.sha256 is None for _, check in report.rows)
    assert rendered(report)[1] == (
        "total audio duration: 0:00:04 (0.00 h) over 2 files; "
        "2 duplicate rows of the same audio counted once"
    )
    line = cost_line(report.total_duration_s, 3600.0, report.unknown_duration, report.duplicates)
    assert line == (
        "estimated cost: 0.0011 h x 3600 per hour = 4.00; "
        "each unique audio counted once (2 duplicate rows left out)"
    )


def test_files_over_the_upload_limit_are_warned_about_not_failed(tmp_path: Path) -> None:
    rows = [["audio_path", "file_id"]]
    for n in range(12):
        (tmp_path / f"a{n}.wav").write_bytes(audio_bytes("WAV", 1.0 + n / 10))
        rows.append([f"a{n}.wav", f"f{n}"])
    (tmp_path / "small.wav").write_bytes(audio_bytes("WAV", 0.1))
    rows.append(["small.wav", "small"])
    manifest = str(write_csv(tmp_path / "m.csv", rows))
    report = validate_manifest(manifest, MIME, tmp_path / "spool", max_upload_bytes=10_000)
    assert not report.bad and [row.file_id for row, _ in report.oversize] == [
        f"f{n}" for n in range(12)
    ]
    warnings = [line for line in rendered(report) if line.startswith("warning:")]
    size = (tmp_path / "a0.wav").stat().st_size
    assert warnings[0] == (
        f"warning: row 1 f0: {size / 1024:.1f} KiB ({size:,} bytes) is over "
        "INVOX_MAX_UPLOAD_BYTES (9.8 KiB (10,000 bytes)); the provider may refuse it"
    )
    assert len(warnings) == 11
    assert warnings[-1] == "warning: ... and 2 more files over 9.8 KiB (10,000 bytes)"
    assert not [
        ln for ln in rendered(validate_manifest(manifest, MIME, tmp_path / "spool")) if "warn" in ln
    ]


def test_validate_reads_the_limit_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from invox_batch.cli import app

    (tmp_path / "a.wav").write_bytes(audio_bytes("WAV", 1.0))
    manifest = write_csv(tmp_path / "m.csv", [["audio_path", "file_id"], ["a.wav", "big"]])
    monkeypatch.setenv("INVOX_MAX_UPLOAD_BYTES", "100")
    done = CliRunner().invoke(app, ["validate", str(manifest)])
    assert done.exit_code == 0, done.output
    assert "warning: row 1 big: " in done.output and "INVOX_MAX_UPLOAD_BYTES" in done.output
