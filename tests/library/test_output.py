"""Output targets: local folders, file:// URIs and fsspec URIs (memory:// stands in for s3://)."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pyarrow.dataset as ds
import pytest

from invox import ConfigurationError
from invox_batch.output import Output

from ..flow_helpers import audio_set, files_of_run, run_flow, write_csv_manifest
from ..helpers import SandboxControl


def test_local_paths_and_file_uris_are_local_folders(tmp_path: Path) -> None:
    assert Output.parse(str(tmp_path)).local == tmp_path
    assert Output.parse(tmp_path.as_uri() + "/with%20space").local == tmp_path / "with space"
    assert Output.parse(str(tmp_path)).default_state_dir() == tmp_path / ".state"


def test_remote_uris_get_a_filesystem_and_a_local_state_folder() -> None:
    output = Output.parse("memory://bucket/out")
    assert output.is_remote and output.root.endswith("bucket/out")
    assert output.location(Path("files/x.parquet")).startswith("memory://")
    assert output.default_state_dir() != Output.parse("memory://bucket/other").default_state_dir()


def test_unknown_protocols_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="protocol"):
        Output.parse("nosuchproto://bucket/out")


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_a_run_to_a_remote_uri_publishes_whole_parts_and_reruns_from_cache(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 3))
    out = "memory://invox-test/dataset"
    state = tmp_path / "state"
    first = run_flow(sandbox, manifest, Path("unused"), out_uri=out, result_storage=str(state))
    assert first.state.is_completed()
    assert first.summary["files_path"].startswith("memory://invox-test/dataset/files/run_date=")

    fs = fsspec.filesystem("memory")
    table = ds.dataset("/invox-test/dataset/files", filesystem=fs, partitioning="hive").to_table()
    rows = files_of_run(table, first.flow_run_id)
    assert [r["status"] for r in rows] == ["completed"] * 3 and all(r["text"] for r in rows)
    assert not (state / "staging").exists() or not any((state / "staging").iterdir())

    second = run_flow(sandbox, manifest, Path("unused"), out_uri=out, result_storage=str(state))
    assert second.calls == {"token": 0, "presign": 0, "upload": 0, "status": 0}
