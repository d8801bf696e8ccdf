"""A whole batch with sentinel API key, token and transcript: none of them leaks anywhere an
operator or a log collector can see; pre-signed URLs show without their query string."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_LOGGING_LEVEL, temporary_settings

from invox_batch.dataset import read_files, read_segments
from sandbox.server import SandboxServer
from sandbox.settings import SandboxSettings

from ..flow_helpers import audio_set, invox_events, run_flow, write_csv_manifest
from ..helpers import SandboxControl, clear_env

API_KEY = "KEY-SENTINEL-7f3a9c"
TOKEN = "TOKEN-SENTINEL-51d2e8"
TEXT = "TRANSCRIPT-SENTINEL-patient-b0c4"
SENTINELS = (API_KEY, TOKEN, TEXT)


class Everything(logging.Handler):
    """Keeps every record, formatted with its traceback, from every logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def sentinel_sandbox() -> Iterator[SandboxServer]:
    settings = SandboxSettings(
        processing="instant", api_key=API_KEY, fixed_token=TOKEN, instant_text=TEXT
    )
    with SandboxServer(settings) as server:
        yield server


@pytest.fixture
def every_log_line(prefect_harness: None) -> Iterator[Everything]:
    """All log records at DEBUG, including the loggers that do not propagate (prefect, httpx)."""
    handler = Everything()
    names = ("", "prefect", "prefect.task_runs", "prefect.flow_runs", "httpx", "httpcore", "invox")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


def _prefect_record(flow_run_id: str) -> dict[str, Any]:
    """What the Prefect API holds about the run: logs, artifacts, parameters, task states."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    async def read() -> dict[str, Any]:
        await APILogHandler.aflush()
        runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        async with get_client() as client:
            logs = await client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
            artifacts = await client.read_artifacts(flow_run_filter=runs)
            flow_run = await client.read_flow_run(flow_run_id)
            tasks = await client.read_task_runs(flow_run_filter=runs)
        events = await invox_events(flow_run_id)
        return {
            "events": [e.model_dump_json() for e in events],
            "logs": [log.message for log in logs],
            "artifacts": [json.dumps(a.data, default=str) + str(a.description) for a in artifacts],
            "parameters": json.dumps(flow_run.parameters, default=str),
            "states": [str(t.state.message) for t in tasks if t.state],
        }

    return asyncio.run(read())


@pytest.mark.usefixtures("prefect_harness")
def test_no_key_token_or_transcript_leaks_from_a_whole_batch(
    sentinel_sandbox: SandboxServer,
    every_log_line: Everything,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_env(monkeypatch, "INVOX_CACHE_NAMESPACE", "INVOX_API_VERSION")
    monkeypatch.setenv("INVOX_BASE_URL", sentinel_sandbox.base_url)
    monkeypatch.setenv("INVOX_APP_ID", sentinel_sandbox.settings.app_id)
    monkeypatch.setenv("INVOX_API_KEY", API_KEY)
    control = SandboxControl(sentinel_sandbox.base_url)
    rows = [*audio_set(tmp_path, 4), {"audio_path": "gone.wav", "file_id": "gone", "clinic": "x"}]
    manifest = write_csv_manifest(tmp_path / "m.csv", rows)
    # Failures on the way put exception messages into logs and task states too.
    control.faults(rate_503={"presign": 0.4, "status": 0.3}, rate_429={"upload": 0.3}, seed=3)
    control.faults(retry_after_s=0.05, token_ttl_s=2.0, job_error_sha256=[])

    with temporary_settings(updates={PREFECT_LOGGING_LEVEL: "DEBUG"}):
        run = run_flow(control, manifest, tmp_path / "out", retries=20)

    out = tmp_path / "out"
    files = read_files(out).to_pylist()
    assert sum(r["status"] == "completed" for r in files) == 4  # the transcripts did arrive
    assert {s["text"] for s in read_segments(out).to_pylist()} == {TEXT}
    prefect = _prefect_record(run.flow_run_id)
    assert prefect["logs"] and prefect["artifacts"] and prefect["states"]
    failed = [e for e in prefect["events"] if "invox-batch.file.failed" in e]
    assert len(failed) == 1 and "invox-batch.file.gone" in failed[0]  # the missing file
    places: dict[str, list[str]] = {
        "captured logs": every_log_line.lines,
        "Prefect logs": prefect["logs"],
        "Prefect artifacts": prefect["artifacts"],
        "flow run parameters": [prefect["parameters"]],
        "task states": prefect["states"],
        "Prefect events": prefect["events"],
        "error columns": [f"{r['error_type']} {r['error_message']}" for r in files],
        "run summary": [p.read_text() for p in (out / "runs").glob("*.json")],
    }
    for place, texts in places.items():
        for sentinel in SENTINELS:
            assert not [t for t in texts if sentinel in t], f"{sentinel} leaked into {place}"
    uploads = [
        m for t in every_log_line.lines + prefect["logs"] for m in re.findall(r"/_upload/\S*", t)
    ]
    assert uploads, "expected pre-signed URLs in the debug logs (redacted)"
    assert not [u for u in uploads if "?" in u or "signature" in u]
