"""``report`` reads any location ``run`` writes: a real S3-compatible server (moto) over loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import httpx
import pytest
from typer.testing import CliRunner

from invox_batch.cli import app
from invox_batch.errors import ReportError
from invox_batch.report import load_report

from ..flow_helpers import audio_set, run_flow, write_csv_manifest
from ..helpers import SandboxControl
from .test_report import RUN_A, RUN_B, dataset  # noqa: F401  (the shared two-run dataset)

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, in its own process: deltalake holds the GIL
    while it waits for object-store answers, so a server thread here could never answer."""
    port = _free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 30
    try:
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Every s3:// URI of this test goes to the moto server, with dummy credentials."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3_endpoint})
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("invox-report")
    yield fsspec.filesystem("s3")
    fs.rm("invox-report", recursive=True)
    fsspec.filesystem("s3").invalidate_cache()


def test_the_report_of_a_dataset_on_s3_equals_the_local_one(
    s3: Any,
    dataset: Path,  # noqa: F811
) -> None:
    s3.put(f"{dataset}/files", "invox-report/copy/", recursive=True)
    remote, local = load_report("s3://invox-report/copy"), load_report(dataset)
    assert remote.statuses == local.statuses and remote.runs == local.runs
    assert load_report("s3://invox-report/copy", RUN_B).rows == 3
    with pytest.raises(ReportError, match="is not in"):
        load_report("s3://invox-report/copy", "no-such-run")
    with pytest.raises(ReportError, match="run `invox-batch run` first"):
        load_report("s3://invox-report/nothing")
    done = CliRunner().invoke(app, ["report", "s3://invox-report/copy", "--run", RUN_A])
    assert done.exit_code == 0, done.output
    assert "| status: failed | 2 |" in done.output and "| timeout | 1 |" in done.output


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_report_reads_what_a_run_wrote_to_s3(
    s3: Any, sandbox: SandboxControl, tmp_path: Path
) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 3))
    out = "s3://invox-report/x"
    first = run_flow(
        sandbox, manifest, Path("unused"), out_uri=out, result_storage=str(tmp_path / "state")
    )
    assert first.state.is_completed() and first.summary["files_path"].startswith(out)
    assert s3.glob("invox-report/x/files/run_date=*/*.parquet")
    done = CliRunner().invoke(app, ["report", out])
    assert done.exit_code == 0, done.output
    assert "no Parquet dataset" not in done.output and "| status: completed | 3 |" in done.output
    assert first.flow_run_id in done.output


def test_the_up_front_write_test_of_an_s3_output_leaves_nothing(s3: Any, tmp_path: Path) -> None:
    from invox_batch.output import Output

    Output.parse("s3://invox-report/checked").check_writable(str(tmp_path / "state"))
    assert s3.find("invox-report", refresh=True) == []
