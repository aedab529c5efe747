"""Per-subject turns (store/_cache.py), which ANY appends of one process take
in order: first come, first served, and no lock kept once a subject is idle
(every subject ever appended to would otherwise hold one)."""

from __future__ import annotations

import asyncio

import pytest

from angzarr_es.store._cache import Turns


def test_turns_are_taken_in_order_and_none_is_kept_once_idle() -> None:
    async def run() -> None:
        turns = Turns()
        order: list[tuple[str, int]] = []
        gate, both = asyncio.Event(), asyncio.Event()

        async def take(subject: str, i: int) -> None:
            async with turns.turn(subject):
                order.append((subject, i))
                if len(order) == 2:
                    both.set()
                if i == 0:
                    await gate.wait()  # the others queue up behind the first
                if i == 3:
                    raise RuntimeError("a failed append gives its turn up too")

        tasks = [asyncio.create_task(take(s, i)) for i in range(20) for s in ("a", "b")]
        await both.wait()  # a:0 and b:0 hold their turns
        assert len(turns) == 2  # one lock per subject, shared by its waiters
        late = tasks[-1]
        late.cancel()  # cancelled while it waits for its turn
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert [type(r) for r in results].count(RuntimeError) == 2
        assert isinstance(results[-1], asyncio.CancelledError)
        assert [i for s, i in order if s == "a"] == list(range(20))
        assert [i for s, i in order if s == "b"] == list(range(19))
        assert len(turns) == 0

    asyncio.run(run())


def test_a_turn_cancelled_while_held_is_given_up() -> None:
    async def run() -> None:
        turns = Turns()
        held = asyncio.Event()

        async def hold() -> None:
            async with turns.turn("a"):
                held.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(hold())
        await held.wait()
        assert len(turns) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(turns) == 0
        async with turns.turn("a"):  # free again
            assert len(turns) == 1
        assert len(turns) == 0

    asyncio.run(run())
