"""Output targets: local folders, file:// URIs and fsspec URIs (memory:// stands in for s3://)."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pyarrow.dataset as ds
import pytest
from pydantic import ValidationError

from invox import ConfigurationError
from invox_batch.output import Output
from invox_batch.parameters import StateStorage

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


def test_check_writable_leaves_nothing_behind_and_creates_no_folder(tmp_path: Path) -> None:
    Output.parse(str(tmp_path / "new" / "out")).check_writable(str(tmp_path / "state"))
    assert list(tmp_path.iterdir()) == []
    Output.parse(str(tmp_path)).check_writable()
    assert list(tmp_path.iterdir()) == []


def test_check_writable_refuses_a_folder_under_a_file_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(ConfigurationError, match=r"output folder .* is not a folder$"):
        Output.parse(str(tmp_path / "afile" / "out")).check_writable()
    with pytest.raises(ConfigurationError, match=r"^cannot write to the state folder"):
        Output.parse(str(tmp_path / "out")).check_writable(str(tmp_path / "afile" / "s"))


def test_check_writable_test_writes_a_remote_output_and_deletes_the_file(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    Output.parse("memory://check-bucket/out").check_writable(str(tmp_path / "state"))
    assert fs.find("/check-bucket") == []


def test_a_remote_write_failure_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = Output.parse("memory://check-bucket/refused")

    def refuse(path: str, value: bytes) -> None:
        raise PermissionError("Access Denied\n<Error>...</Error>")

    monkeypatch.setattr(output.fs, "pipe_file", refuse)
    with pytest.raises(ConfigurationError) as caught:
        output.check_writable(str(tmp_path / "state"))
    assert caught.value.message.startswith(
        "cannot write to the output memory://check-bucket/refused"
    )
    assert "\n" not in caught.value.message


def test_a_remote_out_names_where_its_records_live_or_is_refused(tmp_path: Path) -> None:
    output = Output.parse("memory://bucket/out")
    with pytest.raises(ConfigurationError, match=r"--result-storage PATH .* or --local-ledger"):
        output.state_dir()
    assert output.state_dir(local_ledger=True) == output.default_state_dir()
    assert output.state_dir(str(tmp_path / "s")) == tmp_path / "s"
    assert Output.parse(str(tmp_path)).state_dir() == tmp_path / ".state"


@pytest.mark.parametrize("uri", ["s3://bucket/state", "gs://b/s", "memory://x/y", "S3://b/s"])
def test_result_storage_that_is_a_uri_is_refused(uri: str) -> None:
    with pytest.raises(ValidationError, match=r"must be a local folder, not a \w+:// URI"):
        StateStorage(result_storage=uri)


def test_result_storage_as_a_file_uri_is_its_path(tmp_path: Path) -> None:
    assert StateStorage(result_storage=(tmp_path / "a b").as_uri()).result_storage == str(
        tmp_path / "a b"
    )
    assert StateStorage(result_storage="").result_storage is None
