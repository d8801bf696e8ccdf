"""Every output and state file is owner-only by default; INVOX_BATCH_PRIVATE_FILES=false or
``--shared-files`` lets them follow the umask."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from invox_batch.cli import app
from invox_batch.files import PRIVATE_FILES_ENV, private_files

from ..flow_helpers import audio_set, run_flow, write_csv_manifest
from ..helpers import SandboxControl


def _modes(out: Path) -> tuple[set[int], set[int]]:
    """Permission bits of every file and every folder under ``out`` (itself included)."""
    files = {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    dirs = {stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")] if p.is_dir()}
    return files, dirs


def _kinds(out: Path) -> set[str]:
    """Which kinds of file the run left, so the test knows it checked the state files too."""
    names = [p.relative_to(out).parts for p in out.rglob("*") if p.is_file()]
    return {parts[0] if parts[0] != ".state" else "/".join(parts[:2]) for parts in names}


@pytest.mark.usefixtures("prefect_harness", "invox_env", "umask_022")
def test_outputs_and_state_are_owner_only_by_default(
    sandbox: SandboxControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PRIVATE_FILES_ENV, raising=False)
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 2))
    out = tmp_path / "out"
    run_flow(sandbox, manifest, out, vtt=True)
    assert {"files", "segments", "runs", "captions", ".state/ledger.sqlite3"} <= _kinds(out)
    assert _modes(out) == ({0o600}, {0o700})


@pytest.mark.usefixtures("prefect_harness", "invox_env", "umask_022")
def test_shared_files_follow_the_umask(
    sandbox: SandboxControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PRIVATE_FILES_ENV, "true")  # the flag must win, and be undone after
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 2))
    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["run", str(manifest), "--out", str(out), "--shared-files"])
    assert done.exit_code == 0, done.output
    assert ".state/ledger.sqlite3" in _kinds(out)
    assert _modes(out) == ({0o644}, {0o755})


def test_private_files_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PRIVATE_FILES_ENV, raising=False)
    assert private_files() is True and private_files(False) is False
    for value, expected in (("false", False), ("0", False), ("YES", True), ("", True)):
        monkeypatch.setenv(PRIVATE_FILES_ENV, value)
        assert private_files() is expected
    monkeypatch.setenv(PRIVATE_FILES_ENV, "maybe")
    with pytest.raises(ValueError, match=PRIVATE_FILES_ENV):
        private_files()


def test_a_bad_private_files_value_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PRIVATE_FILES_ENV, "maybe")
    manifest = tmp_path / "m.csv"
    manifest.write_text("audio_path\na.wav\n")
    done = CliRunner().invoke(app, ["run", str(manifest), "--out", str(tmp_path / "out")])
    assert done.exit_code == 2 and PRIVATE_FILES_ENV in done.output
