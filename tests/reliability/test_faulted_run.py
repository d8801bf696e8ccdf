"""200 files through every fault at once: each row completes and no audio is uploaded twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from invox_batch.dataset import read_files

from ..flow_helpers import files_of_run, make_wav, run_flow, write_csv_manifest
from ..helpers import SandboxControl

FILES = 200
EVERY = ("token", "presign", "upload", "status")


# About 100 s on Prefect 3.8.8, 160-200 s on 3.9.1 (same code, same seed): room to spare on a busy CI.
@pytest.mark.timeout(600)
@pytest.mark.usefixtures("prefect_harness")
def test_200_files_under_every_fault_complete_with_one_upload_each(
    own_api: SandboxControl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    control = own_api
    monkeypatch.setenv("INVOX_READ_TIMEOUT_S", "4")  # slow answers (5 s) are lost to the client
    # A lost upload answer is confirmed by the job finishing (1.5-2.5 s of processing) while a
    # third of the status calls fail: 30 s of probes, not the 120 s default, not a coin toss.
    monkeypatch.setenv("INVOX_UPLOAD_CONFIRM_S", "30")
    rows = [
        {
            "audio_path": make_wav(tmp_path / f"a{n:03d}.wav", 10_000 + n, 0.2).name,
            "file_id": f"a{n}",
        }
        for n in range(FILES)
    ]
    manifest = write_csv_manifest(tmp_path / "m.csv", rows)
    # A run makes only ~20 token calls: at the rates one fault kind could miss that
    # endpoint entirely (0.9^20 = 12 %), so the token endpoint gets 30 % of each kind.
    control.faults(
        rate_503={**dict.fromkeys(EVERY, 0.2), "token": 0.3},
        rate_429={**dict.fromkeys(EVERY, 0.1), "token": 0.3},
        retry_after_s=0.2,
        slow_rate={**dict.fromkeys(EVERY, 0.02), "token": 0.3},
        slow_s=5.0,
        stall_upload_rate=0.03,
        stall_upload_s=3.5,  # longer than the upload URL's whole life
        url_ttl_s=3.0,  # whole seconds: at least 2 s left when presigned
        token_ttl_s=3.0,
        seed=2026,
    )

    run = run_flow(
        control,
        manifest,
        tmp_path / "out",
        max_concurrency=16,
        retries=20,
        poll_timeout_s=300.0,
        max_poll_interval_s=0.5,
    )

    stats = control.stats()
    print(f"\ninjected faults: {stats['injected']}; requests: {stats['requests']}")
    assert run.state.is_completed(), run.summary["error_types"]
    written = files_of_run(read_files(tmp_path / "out"), run.flow_run_id)
    assert [r["row_index"] for r in written] == list(range(FILES))
    assert {r["status"] for r in written} == {"completed"}
    assert len(stats["uploads_by_sha256"]) == FILES
    assert set(stats["uploads_by_sha256"].values()) == {1}
    injected = stats["injected"]
    for kind in ("503", "429", "slow"):
        assert all(injected.get(f"{kind}:{e}", 0) > 0 for e in EVERY), (kind, injected)
    assert injected.get("stall:upload", 0) > 0
    assert stats["requests"]["token"] > 1  # three-second tokens were refreshed
