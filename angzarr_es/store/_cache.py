"""Bounded per-process cache of aggregate positions."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NamedTuple


class Position(NamedTuple):
    """Where an aggregate stands: its next sequence and its last commit's stream sequence."""

    next_sequence: int
    stream_seq: int


NEW = Position(0, 0)


class PositionCache:
    """LRU map subject -> Position that only ever moves forward."""

    __slots__ = ("_data", "_size")

    def __init__(self, size: int) -> None:
        self._data: OrderedDict[str, Position] = OrderedDict()
        self._size = size

    def get(self, subject: str) -> Position | None:
        pos = self._data.get(subject)
        if pos is not None:
            self._data.move_to_end(subject)
        return pos

    def put(self, subject: str, pos: Position) -> None:
        if self._size <= 0:
            return
        old = self._data.get(subject)
        if old is not None and old.stream_seq > pos.stream_seq:
            return  # a racing reader saw an older commit; keep the newer one
        self._data[subject] = pos
        self._data.move_to_end(subject)
        if len(self._data) > self._size:
            self._data.popitem(last=False)

    def drop(self, subject: str) -> None:
        self._data.pop(subject, None)

    def clear(self) -> None:
        self._data.clear()


class Turns:
    """One lock per subject, held while it is wanted and dropped once idle."""

    __slots__ = ("_locks",)

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def turn(self, subject: str) -> AsyncIterator[None]:
        """Wait for `subject`'s turn (first come, first served), then hold it."""
        entry = self._locks.get(subject)
        if entry is None:
            entry = self._locks[subject] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[subject]

    def __len__(self) -> int:
        return len(self._locks)
