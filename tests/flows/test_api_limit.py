"""One cap across runs: an ``invox-api`` global concurrency limit holds one slot per file."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tasks.limits import API_LIMIT

from ..flow_helpers import audio_set, run_flow, write_csv_manifest
from ..helpers import SandboxControl

pytestmark = pytest.mark.usefixtures("prefect_harness", "invox_env")


def _set_limit(limit: int | None) -> None:
    """Create the ``invox-api`` limit with ``limit`` slots, or delete it (None)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    async def change() -> None:
        async with get_client() as client:
            with contextlib.suppress(ObjectNotFound):
                await client.delete_global_concurrency_limit_by_name(API_LIMIT)
            if limit is not None:
                body = GlobalConcurrencyLimitCreate(name=API_LIMIT, limit=limit)
                await client.create_global_concurrency_limit(body)

    asyncio.run(change())


@pytest.fixture
def api_limit_of_one() -> Iterator[None]:
    _set_limit(1)
    yield
    _set_limit(None)


def _most_pending(sandbox: SandboxControl, done: threading.Event) -> int:
    """The most jobs ever seen open at once (presigned, not yet terminal) while the run lasts."""
    most = 0
    while not done.is_set():
        most = max(most, sandbox.stats()["jobs"]["PENDING"])
        done.wait(0.01)
    return most


def _run_watching(sandbox: SandboxControl, tmp_path: Path, name: str) -> tuple[int, int]:
    """Four files, four local slots, 0.4 s jobs: (most jobs open at once, files completed)."""
    sandbox.faults(processing_delay_s=[0.4, 0.4])
    manifest = write_csv_manifest(tmp_path / name / "m.csv", audio_set(tmp_path / name, 4))
    done = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        watching = pool.submit(_most_pending, sandbox, done)
        try:
            run = run_flow(sandbox, manifest, tmp_path / f"{name}-out", max_concurrency=4)
        finally:
            done.set()
        most = watching.result()
    return most, run.summary["completed"]


@pytest.mark.usefixtures("api_limit_of_one")
def test_a_limit_of_one_keeps_one_file_in_flight_across_the_slots(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    assert _run_watching(sandbox, tmp_path, "capped") == (1, 4)


def test_without_the_limit_the_local_slots_alone_decide(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    most, completed = _run_watching(sandbox, tmp_path, "free")
    assert completed == 4 and most > 1
