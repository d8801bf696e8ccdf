"""An upload whose answer is lost (the server took the audio, the client timed out) is confirmed
through get-transcription and adopted: never uploaded a second time."""

from __future__ import annotations

from pathlib import Path

import pytest

from invox_batch.dataset import read_files

from ..flow_helpers import audio_set, files_of_run, run_flow, write_csv_manifest
from ..helpers import SandboxControl


@pytest.mark.usefixtures("prefect_harness")
def test_every_upload_answer_lost_still_one_upload_per_audio(
    own_api: SandboxControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    control = own_api
    monkeypatch.setenv("INVOX_READ_TIMEOUT_S", "1")
    monkeypatch.setenv("INVOX_UPLOAD_CONFIRM_S", "10")
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 4))
    control.faults(slow_rate={"upload": 1.0}, slow_s=2.5)

    run = run_flow(control, manifest, tmp_path / "out")

    stats = control.stats()
    assert run.state.is_completed(), run.summary["error_types"]
    assert stats["injected"]["slow:upload"] == 4 and stats["requests"]["upload"] == 4
    assert sorted(stats["uploads_by_sha256"].values()) == [1, 1, 1, 1]
    rows = files_of_run(read_files(tmp_path / "out"), run.flow_run_id)
    assert [r["status"] for r in rows] == ["completed"] * 4
    assert run.calls["presign"] == 4  # no fresh URL either: the first request id was adopted
