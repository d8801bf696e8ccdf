"""Helpers for flow tests: audio and manifests made on the spot, runs, and call accounting."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import soundfile as sf

from invox_batch.parameters import (
    Callbacks,
    Captions,
    Polling,
    Retrying,
    Scale,
    Spend,
    StateStorage,
)

from .helpers import SandboxControl

_GROUPS: dict[str, Any] = {
    "spend": Spend,
    "polling": Polling,
    "retrying": Retrying,
    "callbacks": Callbacks,
    "captions": Captions,
    "scale": Scale,
    "state": StateStorage,
}


def make_wav(path: Path, seed: int, seconds: float = 0.5) -> Path:
    """A short, distinct, valid WAV (different seed → different sha256)."""
    rng = np.random.default_rng(seed)
    samples = (rng.standard_normal(int(16000 * seconds)) * 0.1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, 16000, subtype="PCM_16")
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_csv_manifest(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A CSV manifest with the columns of the first row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def audio_set(folder: Path, count: int, first_seed: int = 0) -> list[dict[str, Any]]:
    """``count`` generated WAVs as manifest rows (relative paths, one metadata column)."""
    return [
        {
            "audio_path": make_wav(folder / f"rec {n:03d}.wav", first_seed + n).name,
            "file_id": f"f{first_seed + n:03d}",
            "clinic": f"clinic-{n % 3}",
        }
        for n in range(count)
    ]


class FlowRun:
    """One finished flow run: its state, summary, and the sandbox calls it made."""

    def __init__(self, state: Any, summary: dict[str, Any], calls: dict[str, int]) -> None:
        self.state = state
        self.summary = summary
        self.calls = calls

    @property
    def flow_run_id(self) -> str:
        return str(self.state.state_details.flow_run_id)


def calls_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Sandbox requests per endpoint made between two stats snapshots."""
    names = ("token", "presign", "upload", "status")
    return {n: after["requests"].get(n, 0) - before["requests"].get(n, 0) for n in names}


def grouped(flat: dict[str, Any]) -> dict[str, Any]:
    """Flat parameter names (``force=True``) as the flow's groups (``spend=Spend(force=True)``)."""
    groups = _GROUPS
    values: dict[str, Any] = {}
    by_group: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        group = next((g for g, model in groups.items() if key in model.model_fields), None)
        if group is None:
            values[key] = value
        else:
            by_group.setdefault(group, {})[key] = value
    return {**values, **{g: groups[g](**kw) for g, kw in by_group.items()}}


def run_flow(
    sandbox: SandboxControl, manifest: Path, out: Path, *, out_uri: str | None = None, **params: Any
) -> FlowRun:
    """Run transcribe-batch in this process (under the session harness) and account for it."""
    from flows.transcribe_batch import transcribe_batch
    from invox_batch.output import Output

    params = {
        "poll_timeout_s": 30.0,
        "max_poll_interval_s": 0.2,
        "retry_base_delay_s": 0.05,
        **params,
    }
    target = out_uri or str(out)
    before = sandbox.stats()
    state = asyncio.run(
        transcribe_batch(manifest=str(manifest), out=target, return_state=True, **grouped(params))
    )
    calls = calls_between(before, sandbox.stats())
    text = Output.parse(target).read_text(Path("runs") / f"{state.state_details.flow_run_id}.json")
    assert text is not None, f"no run summary: {state.message}"
    return FlowRun(state, json.loads(text), calls)


def files_of_run(table: pa.Table, flow_run_id: str) -> list[dict[str, Any]]:
    """The ``files`` rows of one run, in manifest order."""
    rows = [r for r in table.to_pylist() if r["flow_run_id"] == flow_run_id]
    return sorted(rows, key=lambda r: r["row_index"])


def retry_flow_run(flow_run_id: str) -> Any:
    """Re-execute a finished flow run the way the UI's Retry button and a worker do."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow_async
    from prefect.states import AwaitingRetry

    from flows.transcribe_batch import transcribe_batch

    async def retry() -> Any:
        async with get_client() as client:
            await client.set_flow_run_state(flow_run_id, AwaitingRetry(), force=True)
            flow_run = await client.read_flow_run(flow_run_id)
        return await run_flow_async(
            transcribe_batch, flow_run=flow_run, parameters=flow_run.parameters, return_type="state"
        )

    return asyncio.run(retry())


async def invox_events(flow_run_id: str, timeout_s: float = 30.0) -> list[Any]:
    """The run's ``invox-batch.*`` events, read back from the API once its ``run.finished``
    event arrived (events are persisted in batches; polled with a deadline)."""
    import datetime as dt
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventResourceFilter,
    )
    from prefect.events.schemas.events import ResourceSpecification

    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    labels = ResourceSpecification({"flow_run_id": flow_run_id})
    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while True:
            only = EventFilter(  # built anew each time: its window ends when it is built
                occurred=EventOccurredFilter(since=since),
                event=EventNameFilter(prefix=["invox-batch."]),
                resource=EventResourceFilter(labels=labels),
            )
            page = await client.read_events(only, limit=50)
            events = list(page.events)
            if any(e.event == "invox-batch.run.finished" for e in events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"no invox-batch.run.finished event for {flow_run_id}")
            await asyncio.sleep(0.25)


ARTIFACT_KINDS = ("failed-files", "progress", "files", "summary")


def by_kind(artifacts: list[Any]) -> dict[str, Any]:
    """A run's artifacts by the kind their key ends with (every one must have a key)."""
    found: dict[str, Any] = {}
    for artifact in artifacts:
        assert artifact.key, f"an artifact without a key: {artifact.description}"
        kind = next(k for k in ARTIFACT_KINDS if artifact.key.endswith(f"-{k}"))
        found[kind] = artifact
    return found


def recorded_uploads(state_dir: Path, generation: int | None = None) -> int:
    """Accepted uploads in a state folder's SQLite ledger (0 before it exists)."""
    query = "SELECT count(*) FROM invox_attempts WHERE request_id IS NOT NULL"
    if generation is not None:
        query += f" AND generation = {int(generation)}"
    return _count(state_dir, query)


def recorded_results(state_dir: Path) -> int:
    """Terminal results in a state folder's SQLite ledger."""
    return _count(state_dir, "SELECT count(*) FROM invox_attempts WHERE result IS NOT NULL")


def recorded_intents(state_dir: Path) -> int:
    """Upload intents (request ids announced before their PUT) in the SQLite ledger."""
    return _count(state_dir, "SELECT count(*) FROM invox_upload_intents")


def _count(state_dir: Path, query: str) -> int:
    """One count from the ledger, read-only; 0 before it or its schema exists."""
    import sqlite3

    path = state_dir / "ledger.sqlite3"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute(query).fetchone()[0])
    except sqlite3.OperationalError:  # the schema is being created
        return 0
