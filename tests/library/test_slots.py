"""The run's slots: manifest order across groups, a slow file holds only its own slot."""

from __future__ import annotations

import asyncio

import pytest

from invox_batch.slots import Slots


def test_a_freed_slot_goes_to_the_first_waiting_file_in_manifest_order() -> None:
    async def scenario() -> list[str]:
        slots = Slots(1)
        slots.rank(["a", "b", "c", "d"])
        started: list[str] = []
        release_a = asyncio.Event()

        async def settle(identity: str, hold: asyncio.Event | None = None) -> None:
            async with slots.slot(identity):
                started.append(identity)
                if hold is not None:
                    await hold.wait()

        first = asyncio.create_task(settle("a", release_a))
        await asyncio.sleep(0)
        # Later groups ask first: the order of asking does not matter, the manifest's does.
        waiting = [asyncio.create_task(settle(i)) for i in ("d", "c", "b")]
        await asyncio.sleep(0)
        release_a.set()
        await asyncio.gather(first, *waiting)
        return started

    assert asyncio.run(scenario()) == ["a", "b", "c", "d"]


def test_a_slow_file_holds_its_own_slot_and_nothing_else() -> None:
    async def scenario() -> tuple[list[str], int]:
        slots = Slots(2)
        names = [f"f{n}" for n in range(10)]
        slots.rank(names)
        slow_done = asyncio.Event()
        finished: list[str] = []

        async def settle(identity: str) -> None:
            async with slots.slot(identity):
                if identity == "f0":
                    await slow_done.wait()
                else:
                    await asyncio.sleep(0)
                finished.append(identity)

        tasks = [asyncio.create_task(settle(n)) for n in names]
        while len(finished) < 9:  # every other file ends while f0 still holds its slot
            await asyncio.sleep(0)
        busy = slots.busy
        slow_done.set()
        await asyncio.gather(*tasks)
        return finished, busy

    finished, busy = asyncio.run(scenario())
    assert finished == [f"f{n}" for n in range(1, 10)] + ["f0"]
    assert busy == 1


def test_cancelled_files_give_their_slot_back() -> None:
    async def scenario() -> int:
        slots = Slots(1)
        hold = asyncio.Event()

        async def settle(identity: str) -> None:
            async with slots.slot(identity):
                await hold.wait()

        holder = asyncio.create_task(settle("a"))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(settle("b"))
        await asyncio.sleep(0)
        waiter.cancel()  # cancelled while waiting: never counted
        hold.set()
        await holder
        with pytest.raises(asyncio.CancelledError):
            await waiter
        hold.clear()
        holder = asyncio.create_task(settle("c"))
        await asyncio.sleep(0)
        late = asyncio.create_task(settle("d"))
        await asyncio.sleep(0)
        hold.set()
        await asyncio.sleep(0)  # c ends and hands its slot to d, which has not run yet
        late.cancel()  # granted, then cancelled: the slot comes back
        with pytest.raises(asyncio.CancelledError):
            await late
        await holder
        return slots.busy

    assert asyncio.run(scenario()) == 0


def test_groups_open_while_fewer_files_wait_than_there_are_slots() -> None:
    async def scenario() -> list[int]:
        slots = Slots(2)
        seen: list[int] = []
        slots.expect(["a", "b", "c"])
        opened = asyncio.create_task(slots.until_fewer_expected(2))
        await asyncio.sleep(0)
        seen.append(slots.expected)
        async with slots.slot("a"):
            await asyncio.sleep(0)
            assert not opened.done()  # b and c still wait
            async with slots.slot("b"):
                await opened
                seen.append(slots.expected)
        slots.forget(["c"])  # its group ended without it asking (a crashed task run)
        seen.append(slots.expected)
        await slots.until_fewer_expected(1)
        return seen

    assert asyncio.run(scenario()) == [3, 1, 0]


def test_slots_need_at_least_one() -> None:
    with pytest.raises(ValueError):
        Slots(0)
