"""A run to s3:// (moto's S3 server over loopback): whole log parts, the tables MERGEd there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from invox_batch.forgetting import forget

from ..flow_helpers import audio_set, files_of_run, run_flow, transcripts_of, write_csv_manifest
from ..helpers import SandboxControl
from .test_report_remote import s3, s3_endpoint  # noqa: F401  (the moto server fixtures)

pytestmark = pytest.mark.usefixtures("prefect_harness", "invox_env")


def test_a_run_to_s3_merges_the_tables_there_and_reruns_from_cache(
    s3: Any,  # noqa: F811
    sandbox: SandboxControl,
    tmp_path: Path,
) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 3))
    out, state = "s3://invox-report/dataset", tmp_path / "state"
    first = run_flow(sandbox, manifest, Path("unused"), out_uri=out, result_storage=str(state))
    assert first.state.is_completed(), first.state.message
    assert first.summary["tables_path"] == f"{out}/tables"

    table = ds.dataset("invox-report/dataset/files", filesystem=s3, partitioning="hive").to_table()
    rows = files_of_run(table, first.flow_run_id)
    assert [r["status"] for r in rows] == ["completed"] * 3 and "text" not in table.column_names
    assert not (state / "staging").exists() or not any((state / "staging").iterdir())
    assert s3.glob("invox-report/dataset/tables/transcripts/_delta_log/*.json")
    current = transcripts_of(out)
    assert sorted(current) == ["f000", "f001", "f002"] and all(r["text"] for r in current.values())

    second = run_flow(sandbox, manifest, Path("unused"), out_uri=out, result_storage=str(state))
    assert second.calls == {"token": 0, "presign": 0, "upload": 0, "status": 0}
    assert transcripts_of(out) == current  # one row per file, untouched by the cached rerun

    forgot = forget(out, ["f001"], state_dir=state)
    assert (forgot.transcripts, forgot.log_rows, forgot.log_parts) == (1, 2, 2)
    assert sorted(transcripts_of(out)) == ["f000", "f002"]
    text = current["f001"]["text"].encode()
    s3.invalidate_cache()
    everything = s3.find("invox-report/dataset", refresh=True)
    assert any(p.endswith(".parquet") and "/tables/" in p for p in everything)
    leftovers = [p for p in everything if text in s3.cat_file(p)]
    kept = current["f000"]["text"].encode()  # the search can find a transcript that stays
    assert any(kept in s3.cat_file(p) for p in everything)
    assert leftovers == [] and s3.exists("invox-report/dataset/forgotten.jsonl")
    third = run_flow(sandbox, manifest, Path("unused"), out_uri=out, result_storage=str(state))
    assert third.calls["upload"] == 0 and third.summary["error_types"] == {"forgotten": 1}
