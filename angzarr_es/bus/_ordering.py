"""Per-aggregate order for a projector: never two commits of one aggregate
(subject) at once, each aggregate's in stream order, the oldest commit first."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Key", "KeyOrder"]


@dataclass(slots=True)
class Key:
    """Dispatch state of one aggregate (subject)."""

    heap: list[int] = field(default_factory=list)
    busy: bool = False
    blocked_seq: int = 0
    blocked_until: float = 0.0

    def runnable(self, now: float) -> bool:
        return (
            bool(self.heap)
            and not self.busy
            and (not self.blocked_seq or now >= self.blocked_until)
        )

    def block(self, seq: int, until: float) -> None:
        """`seq` was handed back for a retry: hold the aggregate's later
        commits until it comes back, or until `until` at the latest."""
        self.blocked_seq = seq
        self.blocked_until = until


class KeyOrder:
    """The commits in hand, queued per aggregate, and which aggregate runs next."""

    def __init__(self) -> None:
        self._keys: dict[str, Key] = {}
        # Runnable aggregates as (stream seq of their next commit, subject):
        # the oldest commit goes first. Entries may be stale; take() checks.
        self._ready: list[tuple[int, str]] = []

    def add(self, subject: str, seq: int, now: float) -> None:
        """Queue commit `seq` of the aggregate on `subject`."""
        key = self._keys.get(subject)
        if key is None:
            key = self._keys[subject] = Key()
        heapq.heappush(key.heap, seq)
        if key.blocked_seq == seq:
            key.blocked_seq = 0
        self._mark(subject, key, now)

    def take(self, now: float, held: Callable[[int], bool]) -> tuple[str, Key, int] | None:
        """The next commit to run (its aggregate marked busy), skipping those
        `held(seq)` keeps back; None when no aggregate can run."""
        while self._ready:
            head, subject = heapq.heappop(self._ready)
            key = self._keys.get(subject)
            if key is None or not key.runnable(now) or key.heap[0] != head:
                continue
            if held(head):
                continue
            key.blocked_seq = 0
            key.busy = True
            return subject, key, heapq.heappop(key.heap)
        return None

    def release(self, subject: str, key: Key, now: float) -> None:
        """A handler of `subject` returned: its aggregate's next commit may run."""
        key.busy = False
        # After a restart from within this handler the aggregate's key is
        # the new run's: leave it alone.
        if self._keys.get(subject) is key:
            if key.heap or key.blocked_seq:
                self._mark(subject, key, now)
            else:
                del self._keys[subject]

    def unblock(self, now: float) -> float:
        """Let aggregates whose retry wait is over run again; the time the
        next wait ends (inf if none)."""
        wake_at = math.inf
        for subject, key in list(self._keys.items()):
            if not key.blocked_seq or key.busy:
                continue
            if now < key.blocked_until:
                wake_at = min(wake_at, key.blocked_until)
            elif key.heap:
                self._mark(subject, key, now)
            else:
                del self._keys[subject]
        return wake_at

    def clear(self) -> None:
        """Forget every queued commit. An aggregate whose handler still runs
        keeps its (busy) key, so that a restart queues its commits behind that call."""
        busy = {subject: key for subject, key in self._keys.items() if key.busy}
        for key in busy.values():
            key.heap.clear()
            key.blocked_seq = 0
        self._keys = busy
        self._ready.clear()

    def _mark(self, subject: str, key: Key, now: float) -> None:
        if key.runnable(now):
            heapq.heappush(self._ready, (key.heap[0], subject))
