"""``invox-batch forget``: erasure by id and by predicate, bytes gone, no payment again, --force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from invox_batch.cli import app
from invox_batch.dataset import read_files

from ..flow_helpers import (
    audio_set,
    files_of_run,
    run_flow,
    segments_of,
    transcripts_of,
    write_csv_manifest,
)
from ..helpers import SandboxControl

pytestmark = pytest.mark.usefixtures("prefect_harness", "invox_env")
runner = CliRunner()


def _holding(out: Path, text: str) -> list[str]:
    """Every file under ``out`` (state, tables, captions, log) whose bytes contain ``text``."""
    needle = text.encode()
    return [
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and needle in p.read_bytes()
    ]


def test_forget_by_id_and_by_predicate_removes_every_byte_and_reruns_do_not_pay(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    rows = [{**r, "patient_ref": f"P-{n}"} for n, r in enumerate(audio_set(tmp_path, 4))]
    manifest = write_csv_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "out"
    first = run_flow(sandbox, manifest, out, vtt=True, srt=True)
    assert first.state.is_completed(), first.state.message
    run_flow(sandbox, manifest, out)  # a second log part naming every file
    texts = {f: r["text"] for f, r in transcripts_of(out).items()}
    assert all(_holding(out, t) for t in texts.values())  # the search finds what is there

    dry = runner.invoke(app, ["forget", str(out), "--file-id", "f000", "--dry-run"])
    assert dry.exit_code == 0 and dry.output.startswith("would forget 1 files (1 audio)")
    assert _holding(out, texts["f000"]) and not (out / "forgotten.jsonl").exists()

    done = runner.invoke(app, ["forget", str(out), "--file-id", "f000"])
    assert done.exit_code == 0, done.output
    assert done.output.startswith("forgot 1 files (1 audio): 1 transcripts, ")
    assert "2 caption files" in done.output and "2 log rows in 2 parts" in done.output
    assert "f000" not in done.output and texts["f000"] not in done.output
    assert _holding(out, texts["f000"]) == []
    assert _holding(out, texts["f001"])  # the others stay

    by_predicate = runner.invoke(app, ["forget", str(out), "--where", "patient_ref = 'P-2'"])
    assert by_predicate.exit_code == 0 and by_predicate.output.startswith("forgot 1 files")
    assert _holding(out, texts["f002"]) == [] and "P-2" not in by_predicate.output
    assert sorted(transcripts_of(out)) == ["f001", "f003"]
    assert {s["file_id"] for s in segments_of(out)} == {"f001", "f003"}
    assert not (out / "captions" / "f002.vtt").exists() and (out / "captions" / "f001.vtt").exists()
    audit = [json.loads(line) for line in (out / "forgotten.jsonl").read_text().splitlines()]
    assert [a["by"] for a in audit] == [["file_id"], ["where"]] and audit[0]["transcripts"] == 1
    assert "f000" not in (out / "forgotten.jsonl").read_text()

    rerun = run_flow(sandbox, manifest, out)
    assert rerun.calls["presign"] == rerun.calls["upload"] == 0
    assert rerun.summary["error_types"] == {"forgotten": 2} and rerun.state.is_failed()
    logged = {r["file_id"]: r for r in files_of_run(read_files(out), rerun.flow_run_id)}
    assert (
        logged["f000"]["error_type"] == "forgotten" and "--force" in logged["f000"]["error_message"]
    )
    assert _holding(out, texts["f000"]) == [] and _holding(out, texts["f002"]) == []

    forced = run_flow(sandbox, manifest, out, force=True)
    assert forced.state.is_completed() and forced.calls["upload"] == 4
    after = run_flow(sandbox, manifest, out)  # the forced uploads lifted the tombstones
    assert after.state.is_completed() and after.calls["upload"] == 0
    assert sorted(transcripts_of(out)) == ["f000", "f001", "f002", "f003"]


def test_forget_refuses_nothing_to_go_by_and_a_bad_condition_in_one_line(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 1))
    out = tmp_path / "out"
    run_flow(sandbox, manifest, out)
    nothing = runner.invoke(app, ["forget", str(out)])
    assert nothing.exit_code == 2 and "--file-id" in nothing.output
    bad = runner.invoke(app, ["forget", str(out), "--where", "no_such_column = 'x'"])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1
    assert bad.output.startswith("error: --where is not a SQL condition on these columns")
    sneaky = runner.invoke(
        app, ["forget", str(out), "--where", "file_id IN (SELECT 1 FROM read_csv('/etc/passwd'))"]
    )
    assert sneaky.exit_code == 2
    assert len(transcripts_of(out)) == 1
