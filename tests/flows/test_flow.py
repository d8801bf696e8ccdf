"""transcribe-batch end to end: a real Prefect harness, the sandbox over loopback, real Parquet."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

from invox import InvoxClient
from invox_batch.dataset import read_files
from sandbox.server import SandboxServer

from ..conftest import SAMPLES, client_settings_for
from ..flow_helpers import (
    audio_set,
    files_of_run,
    make_wav,
    retry_flow_run,
    run_flow,
    segments_of,
    sha256_of,
    transcripts_of,
    write_csv_manifest,
)
from ..helpers import SandboxControl

pytestmark = pytest.mark.usefixtures("prefect_harness", "invox_env")


def test_sample_run_writes_parquet_equal_to_what_the_api_returned(
    sandbox_server: SandboxServer, sandbox: SandboxControl, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run = run_flow(sandbox, SAMPLES / "manifest.csv", out)
    assert run.state.is_completed(), run.state.message
    assert run.summary["completed"] == 8 and run.summary["failed"] == 0
    assert run.calls == {"token": 1, "presign": 8, "upload": 8, "status": run.calls["status"]}

    rows = files_of_run(read_files(out), run.flow_run_id)
    assert [r["file_id"] for r in rows] == [f"visit-{n:03d}" for n in range(1, 9)]
    assert {r["clinic"] for r in rows} >= {"cardiology", "pulmonology"}

    async def fetch_all() -> dict[str, Any]:
        async with InvoxClient(client_settings_for(sandbox_server)) as client:
            return {r["request_id"]: await client.get_transcription(r["request_id"]) for r in rows}

    truth = asyncio.run(fetch_all())
    segments, current = segments_of(out), transcripts_of(out)
    assert sorted(current) == [r["file_id"] for r in rows]
    for row in rows:
        api, table = truth[row["request_id"]], current[row["file_id"]]
        assert row["status"] == "completed" and "text" not in row
        assert table["text"] == api.text and table["request_id"] == row["request_id"]
        assert table["clinic"] == row["clinic"] and table["flow_run_id"] == run.flow_run_id
        assert row["n_segments"] == len(api.segments) and row["attempts"] == 1
        mine = [s for s in segments if s["file_id"] == row["file_id"]]
        assert [(s["start_s"], s["end_s"], s["text"]) for s in mine] == [
            (a.start, a.end, a.text) for a in api.segments
        ]

    via_duckdb = duckdb.sql(
        f"select file_id, status from read_parquet('{out}/files/*/*.parquet', hive_partitioning=true) "
        "order by file_id"
    ).fetchall()
    assert via_duckdb == [(r["file_id"], r["status"]) for r in rows]
    assert not (out / "segments").exists()
    assert pq.read_schema(
        run.summary["files_path"]
    ).metadata  # schema version travels with the file


def test_rerun_of_a_completed_manifest_makes_zero_api_calls(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 4))
    first = run_flow(sandbox, manifest, tmp_path / "out")
    second = run_flow(sandbox, manifest, tmp_path / "out")
    assert first.summary["completed"] == second.summary["completed"] == 4
    assert second.calls == {"token": 0, "presign": 0, "upload": 0, "status": 0}
    rows = files_of_run(read_files(tmp_path / "out"), second.flow_run_id)
    assert all(r["from_cache"] and r["status"] == "completed" for r in rows)
    firsts = files_of_run(read_files(tmp_path / "out"), first.flow_run_id)
    assert [r["request_id"] for r in rows] == [r["request_id"] for r in firsts]
    current = transcripts_of(tmp_path / "out")  # one row per file, still the first run's fetch
    assert len(current) == 4 and {r["flow_run_id"] for r in current.values()} == {first.flow_run_id}
    assert len(segments_of(tmp_path / "out")) == sum(r["n_segments"] for r in rows)


def test_timeout_keeps_the_request_id_and_the_rerun_polls_it_without_uploading(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 2))
    sandbox.faults(processing_delay_s=[2.0, 2.0])
    first = run_flow(sandbox, manifest, tmp_path / "out", poll_timeout_s=0.3)
    assert first.state.is_failed() and first.summary["error_types"] == {"timeout": 2}
    timed_out = files_of_run(read_files(tmp_path / "out"), first.flow_run_id)
    assert all(r["request_id"] and "resume" in r["error_message"] for r in timed_out)

    second = run_flow(sandbox, manifest, tmp_path / "out")
    assert second.state.is_completed()
    assert second.calls["presign"] == 0 and second.calls["upload"] == 0
    done = files_of_run(read_files(tmp_path / "out"), second.flow_run_id)
    assert [r["request_id"] for r in done] == [r["request_id"] for r in timed_out]
    assert set(sandbox.stats()["uploads_by_sha256"].values()) == {1}


def test_provider_errors_are_resubmitted_up_to_the_bound_then_only_by_force(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    rows = audio_set(tmp_path, 2)
    manifest = write_csv_manifest(tmp_path / "m.csv", rows)
    bad, good = (sha256_of(tmp_path / r["audio_path"]) for r in rows)
    sandbox.faults(job_error_sha256=[bad])
    out = tmp_path / "out"
    runs = [run_flow(sandbox, manifest, out, max_resubmits=1) for _ in range(3)]
    uploads = sandbox.stats()["uploads_by_sha256"]
    assert uploads == {bad: 2, good: 1}  # first try + one resubmit; the good file never again
    assert [r.calls["upload"] for r in runs] == [2, 1, 0]
    last = files_of_run(read_files(out), runs[2].flow_run_id)
    assert last[0]["error_type"] == "provider_error" and "--force" in last[0]["error_message"]
    assert last[0]["attempts"] == 2 and last[1]["status"] == "completed"

    sandbox.faults(job_error_sha256=[])
    forced = run_flow(sandbox, manifest, out, max_resubmits=1, force=True)
    assert forced.state.is_completed()
    assert sandbox.stats()["uploads_by_sha256"] == {bad: 3, good: 2}


def test_same_content_uploads_once_and_changed_content_is_retranscribed(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    original = make_wav(tmp_path / "a.wav", seed=1)
    shutil.copy(original, tmp_path / "copy of a.wav")
    make_wav(tmp_path / "b.wav", seed=2)
    manifest = write_csv_manifest(
        tmp_path / "m.csv",
        [
            {"audio_path": "a.wav", "file_id": "a"},
            {"audio_path": "copy of a.wav", "file_id": "a-copy"},
            {"audio_path": "b.wav", "file_id": "b"},
        ],
    )
    first = run_flow(sandbox, manifest, tmp_path / "out")
    assert first.calls["upload"] == 2
    rows = files_of_run(read_files(tmp_path / "out"), first.flow_run_id)
    assert rows[0]["request_id"] == rows[1]["request_id"]
    before = transcripts_of(tmp_path / "out")
    assert before["a"]["text"] == before["a-copy"]["text"]

    make_wav(tmp_path / "b.wav", seed=3)  # new content at the same path
    second = run_flow(sandbox, manifest, tmp_path / "out")
    assert second.calls["upload"] == 1
    rows = files_of_run(read_files(tmp_path / "out"), second.flow_run_id)
    assert [r["from_cache"] for r in rows] == [True, True, False]
    after = transcripts_of(tmp_path / "out")  # the new transcript in place of the old one
    assert len(after) == 3 and after["b"]["request_id"] == rows[2]["request_id"]
    assert after["b"]["sha256"] != before["b"]["sha256"] and after["a"] == before["a"]
    segments = [s for s in segments_of(tmp_path / "out") if s["file_id"] == "b"]
    assert {s["request_id"] for s in segments} == {rows[2]["request_id"]}


def test_force_resubmits_every_file(sandbox: SandboxControl, tmp_path: Path) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 3))
    run_flow(sandbox, manifest, tmp_path / "out")
    forced = run_flow(sandbox, manifest, tmp_path / "out", force=True)
    assert forced.calls["upload"] == 3 and forced.summary["from_cache"] == 0
    assert set(sandbox.stats()["uploads_by_sha256"].values()) == {2}


def test_transient_faults_on_every_endpoint_still_complete_every_row(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 20))
    every = {"token": 0.2, "presign": 0.2, "upload": 0.2, "status": 0.2}
    sandbox.faults(rate_503=every, rate_429={k: 0.1 for k in every}, retry_after_s=0, seed=11)
    run = run_flow(sandbox, manifest, tmp_path / "out", retries=10)
    assert run.state.is_completed(), run.summary["error_types"]
    stats = sandbox.stats()
    assert set(stats["uploads_by_sha256"].values()) == {1}
    faults_seen = sum(
        n for e in stats["responses"].values() for s, n in e.items() if s in ("429", "503")
    )
    assert faults_seen > 10  # the faults really fired


def test_bad_rows_fail_locally_without_api_calls_and_the_rest_completes(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    make_wav(tmp_path / "good.wav", seed=5)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "garbage.wav").write_bytes(b"this is not audio at all" * 50)
    manifest = write_csv_manifest(
        tmp_path / "m.csv",
        [
            {"audio_path": "good.wav", "file_id": "good"},
            {"audio_path": "missing.wav", "file_id": "missing"},
            {"audio_path": "empty.wav", "file_id": "empty"},
            {"audio_path": "garbage.wav", "file_id": "garbage"},
        ],
    )
    run = run_flow(sandbox, manifest, tmp_path / "out")
    assert run.state.is_failed() and "3 of 4 files failed" in (run.state.message or "")
    assert run.calls["presign"] == 1 and run.calls["upload"] == 1
    rows = {r["file_id"]: r for r in files_of_run(read_files(tmp_path / "out"), run.flow_run_id)}
    assert rows["good"]["status"] == "completed"
    assert rows["missing"]["error_type"] == "file_missing"
    assert rows["empty"]["error_type"] == "empty_file"
    assert rows["garbage"]["error_type"] == "not_audio"
    assert all(rows[k]["error_message"] for k in ("missing", "empty", "garbage"))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_jsonl_and_parquet_manifests_carry_typed_metadata(
    sandbox: SandboxControl, tmp_path: Path, fmt: str
) -> None:
    import pyarrow as pa

    rows = [
        {
            "audio_path": str(make_wav(tmp_path / f"{n}.wav", seed=40 + n)),
            "file_id": f"j{n}",
            "visit": n,
        }
        for n in range(2)
    ]
    manifest = tmp_path / f"m.{fmt}"
    if fmt == "jsonl":
        manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist(rows), manifest)
    run = run_flow(sandbox, manifest, tmp_path / "out")
    assert run.state.is_completed()
    table = read_files(tmp_path / "out")
    assert pa.types.is_integer(table.schema.field("visit").type)
    assert sorted(r["visit"] for r in files_of_run(table, run.flow_run_id)) == [0, 1]


def test_ui_retry_of_the_same_flow_run_redoes_only_what_failed_and_replaces_its_parts(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    rows = audio_set(tmp_path, 3)
    manifest = write_csv_manifest(tmp_path / "m.csv", rows)
    bad = sha256_of(tmp_path / rows[0]["audio_path"])
    sandbox.faults(job_error_sha256=[bad])
    out = tmp_path / "out"
    first = run_flow(sandbox, manifest, out)
    assert first.state.is_failed()
    sandbox.faults(job_error_sha256=[])

    state = retry_flow_run(first.flow_run_id)
    assert state.is_completed(), state.message
    uploads = sandbox.stats()["uploads_by_sha256"]
    assert uploads[bad] == 2 and sorted(uploads.values()) == [1, 1, 2]
    parts = sorted(p.name for p in (out / "files").rglob("*.parquet"))
    assert parts == [f"{first.flow_run_id}.parquet"]
    assert {r["status"] for r in read_files(out).to_pylist()} == {"completed"}
    current = transcripts_of(out)  # the retry MERGEd again: still one row per file
    assert len(current) == 3 and {r["flow_run_id"] for r in current.values()} == {first.flow_run_id}
    assert len(segments_of(out)) == sum(r["n_segments"] for r in current.values())


def test_a_recorded_job_the_api_has_forgotten_is_submitted_again(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 2))
    sandbox.faults(processing_delay_s=[5.0, 5.0])
    first = run_flow(sandbox, manifest, tmp_path / "out", poll_timeout_s=0.2)
    assert first.summary["error_types"] == {"timeout": 2}
    sandbox.reset()  # the provider lost the jobs (retention, restart)
    second = run_flow(sandbox, manifest, tmp_path / "out")
    assert second.state.is_completed()
    assert second.calls["upload"] == 2 and second.calls["status"] >= 4  # 404s, then new jobs
    old = files_of_run(read_files(tmp_path / "out"), first.flow_run_id)
    new = files_of_run(read_files(tmp_path / "out"), second.flow_run_id)
    assert {r["request_id"] for r in old}.isdisjoint(r["request_id"] for r in new)
    assert [r["attempts"] for r in new] == [2, 2]
    third = run_flow(sandbox, manifest, tmp_path / "out")  # the lost jobs are history now
    assert third.calls == {"token": 0, "presign": 0, "upload": 0, "status": 0}
    assert third.summary["from_cache"] == 2


def test_ui_retry_of_a_forced_run_does_not_pay_again_for_what_it_already_forced(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    rows = audio_set(tmp_path, 3)
    manifest = write_csv_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    run_flow(sandbox, manifest, out)
    bad = sha256_of(tmp_path / rows[0]["audio_path"])
    sandbox.faults(job_error_sha256=[bad])
    forced = run_flow(sandbox, manifest, out, force=True)
    assert forced.state.is_failed() and sorted(sandbox.stats()["uploads_by_sha256"].values()) == [
        2,
        2,
        2,
    ]
    sandbox.faults(job_error_sha256=[])
    state = retry_flow_run(forced.flow_run_id)
    assert state.is_completed(), state.message
    uploads = sandbox.stats()["uploads_by_sha256"]
    assert uploads[bad] == 3 and sorted(uploads.values()) == [2, 2, 3]
    later = run_flow(sandbox, manifest, out)  # the forced results are the newest: served from cache
    assert later.calls["upload"] == 0 and later.summary["from_cache"] == 3


@pytest.mark.usefixtures("prefect_harness")
def test_asr_mode_run_of_the_samples_matches_the_api_and_the_wer_bound(
    asr_sandbox_server: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import csv

    import jiwer

    from ..sandbox.test_sandbox_asr import WER_BOUND

    monkeypatch.setenv("INVOX_BASE_URL", asr_sandbox_server.base_url)
    asr = SandboxControl(asr_sandbox_server.base_url)
    asr.reset()
    run = run_flow(asr, SAMPLES / "manifest.csv", tmp_path / "out", max_poll_interval_s=0.5)
    assert run.state.is_completed(), run.summary["error_types"]
    rows = files_of_run(read_files(tmp_path / "out"), run.flow_run_id)

    async def fetch_all() -> dict[str, Any]:
        async with InvoxClient(client_settings_for(asr_sandbox_server)) as client:
            return {r["request_id"]: await client.get_transcription(r["request_id"]) for r in rows}

    truth = asyncio.run(fetch_all())
    texts = {f: r["text"] for f, r in transcripts_of(tmp_path / "out").items()}
    assert all(texts[r["file_id"]] == truth[r["request_id"]].text for r in rows)
    with (SAMPLES / "manifest.csv").open(newline="") as handle:
        references = {r["file_id"]: r["reference_text"] for r in csv.DictReader(handle)}
    wer = jiwer.wer(
        [references[r["file_id"]] for r in rows], [texts[r["file_id"]].lower() for r in rows]
    )
    assert wer <= WER_BOUND
