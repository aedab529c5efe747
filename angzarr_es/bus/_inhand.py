"""The deliveries a projector holds: received and not yet settled (acked,
handed back or dead-lettered), and which handler task settles each."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from angzarr_es import _nats
from angzarr_es._nats import Wire

__all__ = ["InHand"]


class InHand:
    """A projector's deliveries in hand, by stream sequence."""

    def __init__(self) -> None:
        self._msgs: dict[int, _nats.Pulled] = {}
        # Stream sequence -> the task running its handler.
        self._active: dict[int, asyncio.Task[None]] = {}
        # Handlers still running when stop() returned (a stop from a handler)
        # -> the delivery each settles itself (None: its consumer was deleted
        # by reset(), and the replay handles the commit again).
        self._detached: dict[asyncio.Task[None], _nats.Pulled | None] = {}

    def __len__(self) -> int:
        return len(self._msgs)

    def __contains__(self, seq: object) -> bool:
        return seq in self._msgs

    def __getitem__(self, seq: int) -> _nats.Pulled:
        return self._msgs[seq]

    def get(self, seq: int) -> _nats.Pulled | None:
        return self._msgs.get(seq)

    def receive(self, msg: _nats.Pulled) -> bool:
        """Hold `msg` (a redelivery replaces the reply subject); whether it is new."""
        known = msg.stream_seq in self._msgs
        self._msgs[msg.stream_seq] = msg
        return not known

    def started(self, seq: int, task: asyncio.Task[None]) -> None:
        """`task` runs the handler of `seq`."""
        self._active[seq] = task

    def settle(self, seq: int, msg: _nats.Pulled) -> _nats.Pulled | None:
        """Take the delivery a handler settles: its own if stop() detached it
        (None: nothing to settle), else the latest for `seq` (a redelivery
        carries a new reply subject)."""
        me = asyncio.current_task()
        if me in self._detached:
            return self._detached.pop(me)
        return self._msgs.pop(seq, msg)

    def finished(self, seq: int, task: asyncio.Task[None]) -> None:
        """The handler `task` of `seq` ended."""
        if self._active.get(seq) is task:
            del self._active[seq]
        self._detached.pop(task, None)

    def detached(self) -> Iterator[asyncio.Task[None]]:
        """The handlers a stop left running."""
        return iter(list(self._detached))

    def is_detached(self, task: asyncio.Task[object]) -> bool:
        return task in self._detached

    def orphan(self) -> None:
        """The consumer was deleted: the handlers a stop left running settle nothing
        (their acks would settle the new consumer's replay)."""
        for task in self._detached:
            self._detached[task] = None

    def hand_back(self) -> list[_nats.Pulled]:
        """Stopping: take out the deliveries whose handler has not started, and
        leave each running one to its handler to settle."""
        idle = [msg for seq, msg in self._msgs.items() if seq not in self._active]
        for msg in idle:
            self._msgs.pop(msg.stream_seq, None)
        for seq, task in self._active.items():  # the calling handler's: settled by it
            if seq in self._msgs and task not in self._detached:
                self._detached[task] = self._msgs.pop(seq)
        # Those handlers run on past this stop: their entries must not make a
        # later stop take the next run's deliveries for theirs.
        self._active.clear()
        return idle

    async def keep_alive(self, wire: Wire) -> None:
        """An in-progress ack for every delivery in hand.

        Raises:
            StoreError: not sent.
        """
        for msg in list(self._msgs.values()):
            await _nats.reply(wire, msg.reply, _nats.PROGRESS)
