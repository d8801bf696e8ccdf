"""``invox-batch run`` and ``validate``: exit codes, summaries and the embedded sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from invox_batch.cli import app
from invox_batch.dataset import read_files

from ..conftest import ROOT, SAMPLES
from ..flow_helpers import audio_set, transcripts_of, write_csv_manifest
from ..helpers import SandboxControl, clear_env

runner = CliRunner()


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    """No INVOX_BASE_URL: the CLI starts its own (instant) sandbox; env changes are undone."""
    clear_env(
        monkeypatch, "INVOX_BASE_URL", "INVOX_APP_ID", "INVOX_API_KEY", "INVOX_CACHE_NAMESPACE"
    )
    monkeypatch.setenv("INVOX_SANDBOX_PROCESSING", "instant")


@pytest.mark.usefixtures("prefect_harness", "embedded")
def test_run_with_the_embedded_sandbox_then_rerun_from_cache(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = runner.invoke(app, ["run", str(SAMPLES / "manifest.csv"), "--out", str(out), "--vtt"])
    assert first.exit_code == 0, first.output
    assert "embedded sandbox" in first.output and "8 of 8 files completed" in first.output
    assert f"files:    {out}/files/run_date=" in first.output
    assert f"tables:   {out}/tables" in first.output
    assert len(list((out / "captions").glob("*.vtt"))) == 8

    second = runner.invoke(app, ["run", str(SAMPLES / "manifest.csv"), "--out", str(out)])
    assert second.exit_code == 0, second.output
    assert "8 from cache" in second.output
    assert "API calls: token=0, presign=0, upload=0, status=0" in second.output


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_run_exits_1_when_a_row_failed(sandbox: SandboxControl, tmp_path: Path) -> None:
    rows = [*audio_set(tmp_path, 1), {"audio_path": "nope.wav", "file_id": "nope", "clinic": "x"}]
    manifest = write_csv_manifest(tmp_path / "m.csv", rows)
    done = runner.invoke(app, ["run", str(manifest), "--out", str(tmp_path / "out")])
    assert done.exit_code == 1, done.output
    assert "failures by type: file_missing=1" in done.output


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_bad_credentials_exit_2_after_a_single_token_call(
    sandbox: SandboxControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INVOX_API_KEY", "sentinel-wrong-key")
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 5))
    done = runner.invoke(app, ["run", str(manifest), "--out", str(tmp_path / "out")])
    assert done.exit_code == 2, done.output
    assert "INVOX_API_KEY" in done.output and "sentinel-wrong-key" not in done.output
    assert sandbox.requests("token") == 1 and sandbox.requests("presign") == 0
    rows = read_files(tmp_path / "out").to_pylist()
    assert {r["error_type"] for r in rows} == {"unauthorized"} and len(rows) == 5


def test_run_with_a_manifest_lacking_audio_path_exits_2(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,file_id\na.wav,a\n")
    done = runner.invoke(app, ["run", str(manifest), "--out", str(tmp_path / "out")])
    assert done.exit_code == 2 and "audio_path" in done.output


def test_a_bad_api_version_exits_2_before_anything_runs(tmp_path: Path) -> None:
    done = runner.invoke(app, ["run", str(SAMPLES / "manifest.csv"), "--api-version", "2025-13-01"])
    assert done.exit_code == 2 and "--api-version must be a date" in done.output


def test_validate_exit_codes_and_totals(tmp_path: Path) -> None:
    good = runner.invoke(app, ["validate", str(SAMPLES / "manifest.csv")])
    assert good.exit_code == 0, good.output
    assert "8 ok, 0 bad" in good.output and "total audio duration" in good.output
    bad = write_csv_manifest(tmp_path / "m.csv", [{"audio_path": "missing.wav", "file_id": "m"}])
    done = runner.invoke(app, ["validate", str(bad)])
    assert done.exit_code == 1 and "file_missing" in done.output


def test_make_run_path_transcribes_the_samples_with_real_speech_recognition(
    tmp_path: Path, subprocess_prefect_home: Path
) -> None:
    """The user's path end to end: console entry, embedded ASR sandbox, its own Prefect server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOX_")}
    env["PREFECT_HOME"] = str(subprocess_prefect_home)
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "invox_batch",
            "run",
            str(SAMPLES / "manifest.csv"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "asr processing" in done.stderr and "8 of 8 files completed" in done.stdout
    rows = read_files(out).to_pylist()
    texts = transcripts_of(out)
    assert all(r["status"] == "completed" and texts[r["file_id"]]["text"] for r in rows)
    assert "analytics" not in done.stderr.lower() and "Traceback" not in done.stderr


@pytest.mark.usefixtures("prefect_harness")
def test_an_incomplete_credential_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_env(monkeypatch, "INVOX_APP_ID", "INVOX_API_KEY")
    monkeypatch.setenv("INVOX_BASE_URL", "http://127.0.0.1:9")
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(SAMPLES / "manifest.csv"), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "set INVOX_APP_ID and INVOX_API_KEY" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-audio-hours", "nan"], "--max-audio-hours must be a positive number"),
        (["--max-audio-hours", "inf"], "--max-audio-hours must be a positive number"),
        (["--out", "FILE"], "is a file; give a folder"),
    ],
)
def test_run_refuses_unusable_values_with_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    args = [str(afile) if a == "FILE" else a for a in args]
    result = runner.invoke(app, ["run", str(SAMPLES / "manifest.csv"), *args])
    assert result.exit_code == 2 and message in result.output, result.output
