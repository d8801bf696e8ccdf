"""Stopping on a signal: the pure parts, the grace for steps, and settle_all against the sandbox."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from invox import InvoxClient, InvoxSettings
from invox_batch.ledger import Ledger
from invox_batch.parameters import Polling, Retrying, Spend
from invox_batch.progress import ProgressTracker
from invox_batch.records import Outcome
from invox_batch.settling import Run, Unit, Work, settle_all, settle_unit
from invox_batch.stopping import (
    Stop,
    Stopped,
    current_stop,
    exit_status,
    resume_line,
    stop_scope,
    until_stopped,
)

from ..conftest import SAMPLES
from ..flow_helpers import recorded_results, recorded_uploads
from ..helpers import SandboxControl


def test_the_resume_line_says_how_far_and_what_to_do() -> None:
    assert resume_line("SIGTERM", 3, 8) == (
        "stopped by SIGTERM: 3 of 8 files settled; rerun the same command to resume"
    )
    assert resume_line("SIGINT", None, None) == (
        "stopped by SIGINT: no file settled; rerun the same command to resume"
    )
    assert str(Stopped("SIGINT", 0, 2)) == resume_line("SIGINT", 0, 2)


def test_exit_status_follows_the_shell() -> None:
    assert exit_status(signal.SIGINT) == 130
    assert exit_status(signal.SIGTERM) == 143


def test_a_stop_scope_is_fresh_and_leaves_a_never_asked_stop() -> None:
    with stop_scope() as stop:
        assert current_stop() is stop
        stop.request("SIGINT")
        stop.request("SIGTERM")
        assert stop.reason == "SIGINT"  # the first reason stays
    assert current_stop() is not stop and not current_stop().requested


def test_work_not_stopped_returns_its_result() -> None:
    async def work() -> int:
        await asyncio.sleep(0)
        return 7

    assert asyncio.run(until_stopped(work(), Stop(), grace_s=10)) == 7


def test_a_stop_from_another_thread_lets_the_step_in_flight_finish_then_cancels() -> None:
    stop = Stop()
    events: list[str] = []

    async def main() -> None:
        release = asyncio.Event()
        in_step = asyncio.Event()

        async def work() -> None:
            with stop.step():  # an upload: reaches its record before the stop takes effect
                in_step.set()
                await release.wait()
                events.append("recorded")
            try:
                await asyncio.Event().wait()  # a poll: abandoned
            except asyncio.CancelledError:
                events.append("poll abandoned")
                raise

        waiting = asyncio.ensure_future(until_stopped(work(), stop, grace_s=60))
        await in_step.wait()
        asker = threading.Thread(target=stop.request, args=("SIGTERM",))
        asker.start()
        await asyncio.to_thread(asker.join)
        await asyncio.sleep(0)
        assert not waiting.done()  # the step is still in flight: no cancellation yet
        release.set()
        with pytest.raises(Stopped, match="stopped by SIGTERM"):
            await waiting

    asyncio.run(main())
    assert events == ["recorded", "poll abandoned"]


def test_a_step_beyond_the_grace_is_abandoned() -> None:
    stop = Stop()
    stop.request("SIGINT")
    cancelled = []

    async def work() -> None:
        with stop.step():
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

    with pytest.raises(Stopped):
        asyncio.run(until_stopped(work(), stop, grace_s=0.05))
    assert cancelled == [True]


def test_after_a_stop_no_new_file_is_admitted() -> None:
    stop = Stop()

    async def main() -> bool:
        await stop.admit()  # before the stop: at once
        stop.request("SIGTERM")
        waiting = asyncio.ensure_future(stop.admit())
        for _ in range(5):
            await asyncio.sleep(0)
        held = not waiting.done()
        waiting.cancel()
        return held

    assert asyncio.run(main())


async def _gathered(run: Run, work: Sequence[Work]) -> list[Outcome]:
    """The simplest executor: every file at once on this loop, through settle_unit."""
    return list(await asyncio.gather(*(settle_unit(run, u, p) for u, p in work)))


async def _authenticated() -> None:
    return None


def _units() -> dict[str, Unit]:
    names = ("visit-001", "visit-002", "visit-003", "visit-004")
    return {n: Unit(n, n, str(SAMPLES / f"{n}.wav"), "audio/wav", 5.0) for n in names}


def _run(client: InvoxClient, ledger: Ledger, stop: Stop | None = None) -> Run:
    return Run(
        client,
        ledger,
        spend=Spend(),
        polling=Polling(first_poll_ratio=0.01, max_poll_interval_s=0.2),
        retrying=Retrying(),
        log=logging.getLogger("test"),
        flow_run_id=None,
        concurrency=2,
        progress=ProgressTracker(4),
        stopping=stop,
    )


def test_a_stopped_settle_all_keeps_what_was_accepted_and_a_rerun_uploads_nothing_twice(
    settings: InvoxSettings, sandbox: SandboxControl, tmp_path: Path
) -> None:
    sandbox.faults(processing_delay_s=[3, 3])  # uploaded jobs are still processing at the stop
    state = tmp_path / "ledger"
    stop = Stop()

    async def stopped() -> Stopped:
        async with InvoxClient(settings) as client, Ledger.open(state) as ledger:
            settling = asyncio.ensure_future(
                settle_all(_run(client, ledger, stop), _units(), _gathered, _authenticated)
            )
            deadline = time.monotonic() + 30
            while recorded_uploads(state) < 2:  # the two admitted files are uploaded
                assert time.monotonic() < deadline and not settling.done()
                await asyncio.sleep(0.01)
            stop.request("SIGTERM")
            with pytest.raises(Stopped) as raised:
                await settling
            return raised.value

    first = asyncio.run(stopped())
    assert (first.reason, first.settled, first.total) == ("SIGTERM", 0, 4)
    assert sandbox.requests("presign") == 2  # the two files not yet started never started
    assert recorded_results(state) == 0

    sandbox.faults(processing_delay_s=[0, 0])

    async def rerun() -> dict[str, Outcome]:
        async with InvoxClient(settings) as client, Ledger.open(state) as ledger:
            return await settle_all(_run(client, ledger), _units(), _gathered, _authenticated)

    outcomes = asyncio.run(rerun())
    assert [o.status for o in outcomes.values()] == ["completed"] * 4
    uploads = sandbox.stats()["uploads_by_sha256"]
    assert sorted(uploads.values()) == [1, 1, 1, 1]  # each audio uploaded once over both runs
