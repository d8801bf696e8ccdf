"""Issue 5's bad-input list, end to end: each gets one clear message and a failed row (or exit 2
for whole-manifest and configuration problems), and the rest of the run goes on.

Covered elsewhere, not repeated here: unreadable permissions under a non-root user
(test_audio_checks::test_unreadable_file, run privilege-dropped by `make test`), bad credentials
(test_cli_run::test_bad_credentials_exit_2_after_a_single_token_call), BOM/CRLF/non-UTF-8/header
parsing details (test_manifest), API down (reliability/test_api_down).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from invox_batch.cli import app
from invox_batch.dataset import read_files

from ..flow_helpers import files_of_run, make_wav, run_flow
from ..helpers import SandboxControl

runner = CliRunner()

# file_id → (expected error_type, a phrase of the actionable message); None = completes.
ROWS: dict[str, tuple[str, str] | None] = {
    "good": None,
    "spaces and non-ascii": None,
    "huge-note": None,
    "empty": ("empty_file", "re-export or re-copy it"),
    "corrupt": ("not_audio", "whatever its extension says"),
    "aiff": ("unsupported_type", "convert it to WAV"),
    "folder": ("not_a_file", "list each file on its own row"),
    "missing": ("file_missing", "check audio_path in the manifest"),
    "unreadable": ("unreadable", "permission"),
}


def _make_inputs(folder: Path) -> dict[str, str]:
    """One file (or non-file) per case; returns file_id → audio_path cell."""
    make_wav(folder / "good.wav", 1)
    make_wav(folder / "consulta ñandú 日本 01.wav", 2)
    make_wav(folder / "note.wav", 3)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "corrupt.wav").write_bytes(os.urandom(4096))
    sf.write(folder / "tone.aiff", np.zeros(8000, dtype=np.float32), 16000, format="AIFF")
    (folder / "a folder.wav").mkdir()
    locked = make_wav(folder / "locked.wav", 4)
    locked.chmod(0)
    return {
        "good": "good.wav",
        "spaces and non-ascii": "consulta ñandú 日本 01.wav",
        "huge-note": "note.wav",
        "empty": "empty.wav",
        "corrupt": "corrupt.wav",
        "aiff": "tone.aiff",
        "folder": "a folder.wav",
        "missing": "nowhere/lost.wav",
        "unreadable": "locked.wav",
    }


def _write_bom_crlf_manifest(path: Path, cells: dict[str, str], huge: str) -> Path:
    """A spreadsheet-style export: UTF-8 BOM, CRLF line ends, one enormous metadata cell."""
    lines = ["audio_path,file_id,note"]
    for file_id, audio in cells.items():
        note = huge if file_id == "huge-note" else "short"
        lines.append(f'"{audio}","{file_id}","{note}"')
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    return path


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_each_bad_row_fails_alone_with_a_clear_message(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    cells = _make_inputs(tmp_path)
    huge = "x" * 2_000_000
    manifest = _write_bom_crlf_manifest(tmp_path / "manifest.csv", cells, huge)
    root_reads_anyway = os.access(tmp_path / "locked.wav", os.R_OK)

    run = run_flow(sandbox, manifest, tmp_path / "out")

    rows = {r["file_id"]: r for r in files_of_run(read_files(tmp_path / "out"), run.flow_run_id)}
    assert list(rows) == list(cells)  # every row, in manifest order, exactly once
    for file_id, expected in ROWS.items():
        row = rows[file_id]
        if expected is None or (file_id == "unreadable" and root_reads_anyway):
            assert row["status"] == "completed", (file_id, row["error_message"])
            continue
        error_type, phrase = expected
        assert (row["status"], row["error_type"]) == ("failed", error_type), file_id
        assert phrase in row["error_message"], (file_id, row["error_message"])
        assert "\n" not in row["error_message"] and "Traceback" not in row["error_message"]
    assert rows["huge-note"]["note"] == huge
    assert rows["spaces and non-ascii"]["audio_path"] == "consulta ñandú 日本 01.wav"
    assert sandbox.requests("upload") == 3 + root_reads_anyway  # bad rows never reach the API


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"", "empty"),
        (b"good.wav,a\r\nother.wav,b\r\n", "header"),
        (b"audio_path,file_id\r\na.wav,same\r\nb.wav,same\r\n", "duplicate"),
        ("audio_path,file_id\na.wav,señal\n".encode("latin-1"), "UTF-8"),
    ],
    ids=["empty manifest", "missing header", "duplicate file_id", "non-UTF-8"],
)
def test_whole_manifest_problems_exit_2_before_any_call(
    tmp_path: Path, content: bytes, phrase: str
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(content)
    done = runner.invoke(app, ["run", str(manifest), "--out", str(tmp_path / "out")])
    assert done.exit_code == 2, done.output
    errors = [line for line in done.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and phrase.lower() in errors[0].lower(), done.output
    assert not (tmp_path / "out").exists()


def test_an_invox_base_url_that_is_not_a_url_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("audio_path\na.wav\n")
    for value in ("nonsense", "ftp://host/api", "http://"):
        monkeypatch.setenv("INVOX_BASE_URL", value)
        done = runner.invoke(app, ["run", str(manifest), "--out", str(tmp_path / "out")])
        assert done.exit_code == 2, (value, done.output)
        assert "INVOX_BASE_URL" in done.output and "http(s) URL" in done.output, done.output


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_a_flow_run_with_bad_parameters_fails_in_one_line_without_a_traceback(
    tmp_path: Path,
) -> None:
    """What a deployment run with a wrong manifest or output shows in the UI: one line."""
    import asyncio
    import logging

    from flows.transcribe_batch import transcribe_batch

    lines: list[str] = []
    handler = logging.Handler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.emit = lambda record: lines.append(handler.format(record))  # type: ignore[method-assign]
    logging.getLogger("prefect").addHandler(handler)  # Prefect's loggers do not propagate
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    manifest = tmp_path / "m.csv"
    manifest.write_text("audio_path\nx.wav\n")
    cases = {
        str(tmp_path / "missing.csv"): (str(tmp_path / "out"), "manifest not found"),
        str(manifest): (str(a_file / "out"), "cannot write to the output folder"),
    }
    try:
        for given, (out, phrase) in cases.items():
            lines.clear()
            state = asyncio.run(transcribe_batch(manifest=given, out=out, return_state=True))
            message = str(state.message)
            assert state.is_failed() and "\n" not in message
            assert message.startswith("refused before any audio was read or paid for: ")
            assert phrase in message
            assert message in lines and not [line for line in lines if "Traceback" in line]
    finally:
        logging.getLogger("prefect").removeHandler(handler)
