"""The current tables under concurrent shards of one manifest: every file once, nothing lost."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from ..flow_helpers import audio_set, run_flow, segments_of, transcripts_of, write_csv_manifest
from ..helpers import SandboxControl

pytestmark = pytest.mark.usefixtures("prefect_harness", "invox_env")


def test_concurrent_shards_merge_every_file_once(sandbox: SandboxControl, tmp_path: Path) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 6))
    out = tmp_path / "out"
    runs: dict[str, Any] = {}
    errors: list[BaseException] = []

    def shard(name: str) -> None:
        try:
            runs[name] = run_flow(sandbox, manifest, out, shard=name)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=shard, args=(f"{n}/3",)) for n in (1, 2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and all(r.state.is_completed() for r in runs.values())
    current = transcripts_of(out)
    assert sorted(current) == [f"f00{n}" for n in range(6)]
    by_shard = {r["flow_run_id"] for r in current.values()}
    assert by_shard == {r.flow_run_id for r in runs.values()}  # each shard fetched its own
    assert len(segments_of(out)) == sum(r["n_segments"] for r in current.values())
    again = run_flow(sandbox, manifest, out)  # the whole manifest: all cached, nothing new
    assert again.calls["upload"] == 0 and transcripts_of(out) == current
