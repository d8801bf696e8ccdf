"""Callback mode's waiting rule, on its own: a recorded callback means fetch now, else fall back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from invox import ConfigurationError, PollPolicy
from invox_batch.callbacks import CallbackCompletion, CallbackStore, parse_listen
from invox_batch.callbacks._completion import HINT_FIRST_POLL_S

BASE = PollPolicy(timeout_s=60.0, first_delay_s=4.0, max_delay_s=30.0)


def test_a_recorded_callback_means_fetch_at_once(tmp_path: Path) -> None:
    store = CallbackStore(tmp_path)
    store.record("req-1", {"requestId": "req-1"})
    waiter = CallbackCompletion(store, grace_s=30.0)
    policy = asyncio.run(waiter.policy("req-1", BASE))
    assert policy.first_delay_s == HINT_FIRST_POLL_S and policy.max_delay_s == BASE.max_delay_s
    assert 59.0 < policy.timeout_s <= 60.0
    assert waiter.counts == {"callback": 1}


def test_no_callback_falls_back_to_polling_after_the_grace(tmp_path: Path) -> None:
    waiter = CallbackCompletion(CallbackStore(tmp_path), grace_s=0.1, check_every_s=0.02)
    quick = PollPolicy(timeout_s=60.0, first_delay_s=0.05, max_delay_s=30.0)
    policy = asyncio.run(waiter.policy("req-never", quick))
    assert waiter.counts == {"fallback": 1}
    assert policy.first_delay_s == HINT_FIRST_POLL_S and policy.timeout_s < 60.0 - 0.15


def test_a_callback_arriving_while_waiting_ends_the_wait(tmp_path: Path) -> None:
    store = CallbackStore(tmp_path)
    waiter = CallbackCompletion(store, grace_s=30.0, check_every_s=0.02)

    async def scenario() -> PollPolicy:
        waiting = asyncio.create_task(waiter.policy("req-2", BASE))
        await asyncio.sleep(0.1)
        store.record("req-2", {"requestId": "req-2"})
        return await asyncio.wait_for(waiting, timeout=20)

    asyncio.run(scenario())
    assert waiter.counts == {"callback": 1}


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:8766", ("127.0.0.1", 8766)),
        ("[::1]:0", ("::1", 0)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["8766", "host:", ":8766", "host:port"])
def test_parse_listen_refuses_junk(listen: str) -> None:
    with pytest.raises(ConfigurationError, match="host:port"):
        parse_listen(listen)
