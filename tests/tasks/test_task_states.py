"""Issue 14: a settling task run's state is its files' outcome (failed, cached, retried)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from invox_batch.errors import ErrorType
from invox_batch.records import Outcome
from invox_batch.settling import Retried, Unit
from tasks.outcomes import (
    CACHED,
    LEDGER_FILES_PER_TASK,
    group_state,
    ledger_groups,
    state_message,
)

from ..flow_helpers import audio_set, run_flow, sha256_of, write_csv_manifest
from ..helpers import SandboxControl


def unit(label: str) -> Unit:
    return Unit(f"id-{label}", label, f"/a/{label}.wav", "audio/wav", 1.0)


DONE = Outcome(status="completed")
CACHED_DONE = Outcome(status="completed", from_cache=True)


def test_a_group_with_a_failed_file_fails_naming_it_and_its_error_type_only() -> None:
    units = [unit("a"), unit("b"), unit("c")]
    failed = Outcome.failed(ErrorType.PROVIDER_ERROR, "SECRET transcript words")
    retried = {Retried("id-c", "presign", "server_error"): 2, Retried("id-x", "upload", "e"): 1}
    state = group_state(units, [DONE, failed, DONE], retried)
    assert state.is_failed() and state.name == "Failed"
    assert state.message == (
        "1 of 3 files failed: b (provider_error); retried: c: presign 2x (server_error)"
    )
    assert "SECRET" not in str(state.message)


def test_a_group_all_from_the_ledger_is_cached_and_a_fresh_one_is_completed() -> None:
    units = [unit("a"), unit("b")]
    cached = group_state(units, [CACHED_DONE, CACHED_DONE], {})
    assert cached.is_completed() and cached.name == CACHED
    assert cached.message == "2 files completed; 2 settled from the ledger (no API call)"
    fresh = group_state(units[:1], [DONE], {})
    assert (fresh.name, fresh.message) == ("Completed", "1 file completed")
    assert state_message([], [], {}) == "0 files completed"


def _task_runs(flow_run_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list[Any]:
        async with get_client() as client:
            only = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            return await client.read_task_runs(flow_run_filter=only)

    return asyncio.run(read())


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_task_runs_fail_for_failed_files_show_retries_and_show_the_ledger_as_cached(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    rows = audio_set(tmp_path, 3, first_seed=1400)
    manifest = write_csv_manifest(tmp_path / "m.csv", rows)
    bad = sha256_of(tmp_path / rows[1]["audio_path"])
    sandbox.faults(job_error_sha256=[bad], rate_503={"presign": 0.5}, retry_after_s=0, seed=2)
    first = run_flow(sandbox, manifest, tmp_path / "out", retries=8)
    assert first.state.is_failed()
    runs = {r.name: r for r in _task_runs(first.flow_run_id) if r.name.startswith("settle[")}
    assert sorted(runs) == ["settle[f1400]", "settle[f1401]", "settle[f1402]"]
    failed = runs.pop("settle[f1401]")
    assert failed.state.type.value == "FAILED"
    assert failed.state.message.startswith("1 of 1 files failed: f1401 (provider_error)")
    assert all(r.state.type.value == "COMPLETED" for r in runs.values())
    messages = " ".join(str(r.state.message) for r in [failed, *runs.values()])
    assert "presign" in messages and "x (server_error)" in messages  # 503s retried, named

    sandbox.faults(job_error_sha256=[])
    again = run_flow(sandbox, manifest, tmp_path / "out")
    assert again.state.is_completed()
    names = {r.name: r.state for r in _task_runs(again.flow_run_id)}
    assert names["ledger[f1400]"].name == CACHED and names["ledger[f1402]"].name == CACHED
    assert names["settle[f1401]"].is_completed()  # the failed file was resubmitted


def test_ledger_task_runs_are_one_per_file_in_a_small_run_and_few_in_a_large_one() -> None:
    assert [len(g) for g in ledger_groups([unit("a"), unit("b")], 100)] == [1, 1]
    many = [unit(f"f{n}") for n in range(LEDGER_FILES_PER_TASK + 1)]
    groups = ledger_groups(many, 100)
    assert [len(g) for g in groups] == [LEDGER_FILES_PER_TASK, 1]
    assert [u for g in groups for u in g] == many
