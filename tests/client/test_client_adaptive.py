"""Adaptive concurrency (AIMD limiter) and learned first-poll timing (PollTimer)."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import statistics

import pytest

from invox import (
    InvoxClient,
    InvoxSettings,
    PollPolicy,
    PollTimer,
    RateLimitError,
    ServerError,
    Transcription,
)
from invox._limiter import AdaptiveLimiter
from invox._polling import backoff_delay, poll_until_terminal

from ..helpers import SandboxControl
from .test_client_units import FakeClock, _fetcher, _statuses

# --- the limiter -----------------------------------------------------------------------------


def _cycle(limiter: AdaptiveLimiter, outcome: str, times: int = 1) -> None:
    """Acquire and release ``times`` slots one after another with the same outcome."""

    async def main() -> None:
        for _ in range(times):
            ticket = await limiter.acquire()
            limiter.release(ticket, outcome)  # type: ignore[arg-type]

    asyncio.run(main())


def test_successes_grow_about_one_per_round_trip_up_to_the_ceiling() -> None:
    limiter = AdaptiveLimiter(initial=4, ceiling=6)
    _cycle(limiter, "ok", 4)
    assert limiter.limit == pytest.approx(5.0, abs=0.1)
    _cycle(limiter, "ok", 200)
    assert limiter.limit == 6 and limiter.in_flight == 0


def test_a_429_shrinks_by_beta_and_503s_or_errors_do_not() -> None:
    limiter = AdaptiveLimiter(initial=8)
    _cycle(limiter, "neutral", 5)
    assert limiter.limit == 8
    _cycle(limiter, "rate_limited")
    assert limiter.limit == 6 and limiter.decreases == 1
    for _ in range(10):
        _cycle(limiter, "rate_limited")
    assert limiter.limit == 1 and limiter.slots == 1


def test_429s_of_requests_started_before_the_decrease_do_not_shrink_again() -> None:
    async def main() -> AdaptiveLimiter:
        limiter = AdaptiveLimiter(initial=8)
        tickets = [await limiter.acquire() for _ in range(8)]
        for ticket in tickets:
            limiter.release(ticket, "rate_limited")
        return limiter

    limiter = asyncio.run(main())
    assert limiter.decreases == 1 and limiter.limit == 6 and limiter.rate_limited == 8


def test_growth_slows_near_the_limit_of_the_last_429() -> None:
    limiter = AdaptiveLimiter(initial=12, probe=16)
    _cycle(limiter, "rate_limited")  # 12 -> 9, last 429 at 12
    _cycle(limiter, "ok", 30)  # fast up to 11, then +1/16 per round trip
    assert 11 <= limiter.limit < 11.5


def test_waiters_get_slots_in_order_and_cancelled_waiters_leak_none() -> None:
    async def main() -> tuple[list[int], int]:
        limiter = AdaptiveLimiter(initial=1)
        order: list[int] = []
        first = await limiter.acquire()

        async def worker(n: int) -> None:
            async with limiter:
                order.append(n)

        tasks = [asyncio.create_task(worker(n)) for n in range(3)]
        doomed = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0)
        doomed.cancel()
        limiter.release(first, "neutral")
        await asyncio.gather(*tasks)
        await asyncio.gather(doomed, return_exceptions=True)
        return order, limiter.in_flight

    order, in_flight = asyncio.run(main())
    assert order == [0, 1, 2] and in_flight == 0


class LimitedServer:
    """A fake API that answers 429 to a request arriving while ``capacity`` are in flight."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.in_flight = 0
        self.calls = 0
        self.rejected = 0
        self.rng = random.Random(seed)

    async def call(self) -> None:
        self.calls += 1
        if self.in_flight >= self.capacity:
            self.rejected += 1
            raise RateLimitError("busy", status_code=429)
        self.in_flight += 1
        try:
            for _ in range(self.rng.randint(2, 6)):  # service time in event-loop turns
                await asyncio.sleep(0)
        finally:
            self.in_flight -= 1


def test_aimd_settles_at_the_servers_limit_with_few_429s() -> None:
    capacity, workers, calls_each = 8, 32, 150

    async def main() -> tuple[LimitedServer, list[float]]:
        server = LimitedServer(capacity, seed=3)
        limiter = AdaptiveLimiter(initial=4, ceiling=64)
        limits: list[float] = []

        async def worker() -> None:
            for _ in range(calls_each):
                try:
                    async with limiter:
                        await server.call()
                except RateLimitError:
                    pass
                limits.append(limiter.limit)

        await asyncio.gather(*(worker() for _ in range(workers)))
        return server, limits

    server, limits = asyncio.run(main())
    settled = statistics.mean(limits[len(limits) // 2 :])
    assert 0.7 * capacity <= settled <= capacity + 1
    assert server.rejected / server.calls < 0.05


def test_settings_switch_the_client_limiter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVOX_INITIAL_CONCURRENCY", "6")
    monkeypatch.setenv("INVOX_MAX_INFLIGHT", "5")
    client = InvoxClient(InvoxSettings(base_url="http://127.0.0.1:9"))
    assert client.limiter is not None and client.limiter.limit == 5
    assert client.limiter.ceiling == 5
    off = InvoxClient(InvoxSettings(base_url="http://127.0.0.1:9", adaptive_concurrency=False))
    assert off.limiter is None
    asyncio.run(client.aclose())
    asyncio.run(off.aclose())


def test_client_limiter_shrinks_on_sandbox_429s_only(
    settings: InvoxSettings, sandbox: SandboxControl
) -> None:
    async def presign(client: InvoxClient) -> None:
        for _ in range(3):
            with contextlib.suppress(RateLimitError, ServerError):
                await client.generate_presigned_url("audio/wav")

    async def main(fault: str) -> AdaptiveLimiter:
        sandbox.reset()
        async with InvoxClient(settings.model_copy(update={"initial_concurrency": 8})) as client:
            await client.authenticate()
            sandbox.faults(**{fault: {"presign": 1.0}}, retry_after_s=0)
            await presign(client)
            assert client.limiter is not None
            return client.limiter

    limited = asyncio.run(main("rate_429"))
    assert limited.decreases == 3 and limited.limit < 8 and limited.in_flight == 0
    unavailable = asyncio.run(main("rate_503"))
    assert unavailable.decreases == 0 and unavailable.limit >= 8


# --- polling hooks ---------------------------------------------------------------------------


def test_on_poll_reports_each_attempt_and_its_status() -> None:
    clock = FakeClock()
    seen: list[tuple[int, str]] = []
    busy = RateLimitError("slow down", status_code=429, retry_after=1)
    fetch = _fetcher(_statuses("PENDING", busy, "COMPLETED"))
    policy = PollPolicy(first_delay_s=1, jitter=0)
    asyncio.run(
        poll_until_terminal(
            fetch,
            "r9",
            policy,
            clock=clock,
            sleep=clock.sleep,
            on_poll=lambda n, s: seen.append((n, s)),
        )
    )
    assert seen == [(1, "PENDING"), (2, "rate_limited"), (3, "COMPLETED")]


def test_a_pending_retry_after_hint_delays_the_next_poll_up_to_the_cap() -> None:
    clock = FakeClock()
    answers = iter(
        [
            Transcription(request_id="r9", status="PENDING", retry_after_s=3),
            Transcription(request_id="r9", status="PENDING", retry_after_s=99),
            Transcription(request_id="r9", status="COMPLETED"),
        ]
    )

    async def fetch() -> Transcription:
        return next(answers)

    policy = PollPolicy(first_delay_s=1, max_delay_s=10, jitter=0)
    asyncio.run(poll_until_terminal(fetch, "r9", policy, clock=clock, sleep=clock.sleep))
    assert clock.sleeps == [1, 3, 10]


def test_next_delay_replaces_the_first_delay_as_the_backoff_base() -> None:
    policy = PollPolicy(first_delay_s=10, next_delay_s=1, max_delay_s=6, jitter=0)
    assert [backoff_delay(policy, n) for n in range(5)] == [6, 1, 2, 4, 6]


# --- the poll timer --------------------------------------------------------------------------


def test_timer_policy_scales_with_duration_and_clamps() -> None:
    timer = PollTimer(prior_ratio=0.5)
    for _ in range(40):  # past the early-exploration phase, estimate held near 0.5
        timer.observe(10.0, True, first_delay_s=100.0)
    policy = timer.policy(20.0, timeout_s=60, max_delay_s=30)
    assert policy.first_delay_s == pytest.approx(10.0)
    assert policy.next_delay_s == pytest.approx(1.0) and policy.jitter <= 0.02
    assert timer.policy(None, timeout_s=60, max_delay_s=30).first_delay_s == pytest.approx(1.0)
    assert timer.policy(1000.0, timeout_s=60, max_delay_s=30).first_delay_s == 30
    assert timer.policy(0.01, timeout_s=60, max_delay_s=30).first_delay_s == 0.05


def test_misses_raise_the_estimate_and_hits_lower_it() -> None:
    timer = PollTimer(prior_ratio=0.5)
    timer.observe(10.0, False)
    assert timer.ratio > 0.5
    high = timer.ratio
    timer.observe(10.0, True)
    assert timer.ratio < high
    timer.observe(None, False)  # no duration: nothing to learn
    assert timer.observations == 2


def test_a_second_poll_teaches_when_an_exploring_first_poll_missed() -> None:
    timer = PollTimer(prior_ratio=0.5)
    early = timer.policy(10.0, timeout_s=60, max_delay_s=30)
    assert early.first_delay_s < early.age_floor_s == 5.0  # exploring: before the estimate
    timer.observe(10.0, False, first_delay_s=early.first_delay_s)
    assert timer.ratio == 0.5  # a miss earlier than the estimate says nothing
    timer.observe_retry(10.0, False, early)
    assert timer.ratio > 0.5 and timer.observations == 1  # missed at the estimate: too low
    raised = timer.ratio
    for _ in range(40):
        timer.observe(10.0, True, first_delay_s=100.0)  # past exploring; estimate held
    settled = timer.policy(10.0, timeout_s=60, max_delay_s=30)
    assert settled.first_delay_s == settled.age_floor_s  # polled at the estimate
    timer.observe_retry(10.0, False, settled)  # its first poll already taught what it could
    assert timer.ratio == raised


def _simulate(true_ratio: float, jobs: int, window: int, seed: int) -> tuple[float, float, float]:
    """Jobs in a sliding window on a virtual clock; (polls per job, time / ideal, estimate)."""
    rng = random.Random(seed)
    timer = PollTimer(prior_ratio=0.5)
    events: list[tuple[float, int, dict[str, float]]] = []
    polls, waited, ideal, started = 0, 0.0, 0.0, 0

    def start(now: float) -> None:
        nonlocal started
        duration = rng.uniform(5, 60)
        policy = timer.policy(duration, timeout_s=600, max_delay_s=60)
        job = {"d": duration, "r": true_ratio * rng.uniform(0.95, 1.05), "t0": now, "n": 0}
        job_policies[started] = policy
        job["id"] = started
        heapq.heappush(events, (now + backoff_delay(policy, 0, rng.random), started, job))
        started += 1

    job_policies: dict[int, PollPolicy] = {}
    for _ in range(window):
        start(0.0)
    while events:
        now, _, job = heapq.heappop(events)
        polls += 1
        done = now - job["t0"] >= job["r"] * job["d"]
        policy = job_policies[int(job["id"])]
        if job["n"] == 0:
            timer.observe(job["d"], done, first_delay_s=policy.first_delay_s)
        job["n"] += 1
        if done:
            waited += now - job["t0"]
            ideal += job["r"] * job["d"]
            if started < jobs:
                start(now)
            continue
        delay = backoff_delay(policy, int(job["n"]), rng.random)
        heapq.heappush(events, (now + delay, int(job["id"]), job))
    return polls / jobs, waited / ideal, timer.ratio


@pytest.mark.parametrize("true_ratio", [0.2, 0.37, 0.5])
def test_timer_learns_the_speed_with_few_polls_and_little_extra_wait(true_ratio: float) -> None:
    polls, slowdown, estimate = _simulate(true_ratio, jobs=1000, window=32, seed=1)
    assert polls <= 1.2
    assert slowdown <= 1.10
    assert true_ratio <= estimate <= true_ratio * 1.15


def test_unlimited_calls_skip_a_full_queue_and_leave_the_accounting_alone() -> None:
    from invox import unlimited

    async def main() -> None:
        limiter = AdaptiveLimiter(initial=1, ceiling=1)
        held = await limiter.acquire()
        with unlimited():
            ticket = await asyncio.wait_for(limiter.acquire(), timeout=5)
            limiter.release(ticket, "rate_limited")
        assert limiter.in_flight == 1 and limiter.decreases == 0
        limiter.release(held, "ok")
        assert limiter.in_flight == 0

    asyncio.run(main())
