"""``invox-batch migrate``: a dataset of the previous layout (text in the log) into the tables."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from invox_batch.cli import app
from invox_batch.dataset import read_files
from invox_batch.ledger import audio_identity

from ..flow_helpers import segments_of, transcripts_of

T0 = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)
BASE_URL = "http://127.0.0.1:9"


def _old_row(file_id: str, run: str, status: str, text: str | None, minutes: int) -> dict[str, Any]:
    """A files row as the previous version wrote it: text included, no audio_identity."""
    done = status == "completed"
    return {
        "file_id": file_id,
        "row_index": 0,
        "audio_path": f"{file_id}.wav",
        "sha256": f"{file_id}-{run}" * 4,
        "bytes": 10,
        "mime_type": "audio/wav",
        "duration_s": 2.0,
        "status": status,
        "error_type": None if done else "timeout",
        "error_message": None if done else "late",
        "request_id": f"req-{file_id}-{run}",
        "text": text,
        "n_segments": 1 if done else 0,
        "attempts": 1,
        "from_cache": False,
        "submitted_at": T0,
        "completed_at": T0 + dt.timedelta(minutes=minutes) if done else None,
        "api_version": "2025-10-01",
        "flow_run_id": run,
        "quality": [],
        "patient_ref": f"P-{file_id}",
    }


def _write_old(out: Path, run: str, day: str, rows: list[dict[str, Any]]) -> None:
    """One old run: its files part (with text) and its segments part."""
    meta = {b"invox_batch.metadata_columns": json.dumps(["patient_ref"]).encode()}
    files = pa.Table.from_pylist(rows).replace_schema_metadata(meta)
    segments = [
        {
            "file_id": r["file_id"],
            "sha256": r["sha256"],
            "request_id": r["request_id"],
            "segment_index": 0,
            "start_s": 0.0,
            "end_s": 2.0,
            "text": r["text"],
            "speaker": None,
            "flow_run_id": run,
        }
        for r in rows
        if r["status"] == "completed"
    ]
    for kind, table in (("files", files), ("segments", pa.Table.from_pylist(segments))):
        folder = out / kind / f"run_date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"{run}.parquet")


def test_migrate_imports_the_latest_transcripts_and_strips_text_from_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    _write_old(
        out,
        "run-a",
        "2026-03-01",
        [
            _old_row("a", "run-a", "completed", "old words", 1),
            _old_row("b", "run-a", "failed", None, 0),
        ],
    )
    _write_old(
        out,
        "run-b",
        "2026-03-02",
        [
            _old_row("a", "run-b", "completed", "new words", 5),
            _old_row("b", "run-b", "completed", "bee words", 6),
        ],
    )
    monkeypatch.setenv("INVOX_BASE_URL", BASE_URL)
    done = CliRunner().invoke(app, ["migrate", str(out)])
    assert done.exit_code == 0, done.output
    assert done.output.startswith(
        "migrated: 2 transcripts and 2 segments into the tables, 2 log parts"
    )

    current = transcripts_of(out)
    assert {f: r["text"] for f, r in current.items()} == {"a": "new words", "b": "bee words"}
    assert current["a"]["flow_run_id"] == "run-b" and current["a"]["patient_ref"] == "P-a"
    assert current["a"]["audio_identity"] == audio_identity("a-run-b" * 4, BASE_URL, "2025-10-01")
    assert [(s["file_id"], s["text"]) for s in segments_of(out)] == [
        ("a", "new words"),
        ("b", "bee words"),
    ]
    log = read_files(out)
    assert log.num_rows == 4 and "text" not in log.column_names
    assert set(log.column("audio_identity").to_pylist()) >= {current["a"]["audio_identity"]}
    assert not list(out.glob("segments/*/*.parquet"))
    assert not any(b"old words" in p.read_bytes() for p in out.rglob("*") if p.is_file())

    again = CliRunner().invoke(app, ["migrate", str(out)])
    assert again.exit_code == 0 and again.output.startswith("nothing to migrate")
