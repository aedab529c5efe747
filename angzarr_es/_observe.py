"""Observers: what the store and the projectors report, and to whom.

`Observer` is the public base class (`angzarr_es.Observer`); subclass it and
override the hooks you need. Hand one to `connect(..., observer=...)` or set
`Client.observer`; `angzarr_es.metrics.StoreMetrics` is one.

With no observer set the store's hot path pays one attribute test and
nothing else; the timing below runs only when there is one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Literal

from angzarr_es._types import AppendResult, History
from angzarr_es.errors import AngzarrESError, ConcurrencyError

__all__ = ["CacheOutcome", "Observer", "Outcome", "observe_append", "observe_load"]

Outcome = Literal["ok", "conflict", "error"]
CacheOutcome = Literal["hit", "miss", "fallback"]


class Observer:
    """Hooks the store and the projectors call; every hook does nothing here.

    Subclass and override what you need: hooks added later come with a
    no-op default, so an observer written today keeps working. Hooks run
    inline on the caller's task: keep them short and do not raise.
    """

    __slots__ = ()

    def commit_headers(self, headers: dict[str, str]) -> None:
        """Add headers (e.g. `traceparent`) to a commit about to be published."""

    def appended(self, domain: str, outcome: Outcome, seconds: float, events: int) -> None:
        """One `EventStore.append` call ended.

        `outcome` is "ok", "conflict" (ConcurrencyError) or "error" (another
        `AngzarrESError`); `events` is how many events it wrote (0 unless
        "ok", and 0 for a duplicate of an earlier idempotent append).
        Calls refused before anything is sent (TypeError, ValueError) are
        not reported.
        """

    def loaded(self, domain: str, seconds: float) -> None:
        """One `EventStore.load` call ended, successfully or not."""

    def cache_load(self, domain: str, outcome: CacheOutcome) -> None:
        """A load or iteration with the hot-aggregate cache on.

        "hit": served from the aggregate's entry (one request); "miss": no
        entry, the whole history was read; "fallback": the entry was stale
        (its last commit is gone) and dropped, the whole history was read.
        """

    def retried(self, domain: str, reason: str) -> None:
        """One more attempt at an append: `timeout`, `in_process` or `lost_race`."""

    def redelivered(self, consumer: str, count: int = 1) -> None:
        """A projector was handed a commit again (delivery count above 1)."""

    def dead_lettered(self, consumer: str) -> None:
        """A projector moved a commit to the dead-letter stream."""


async def observe_append(
    observer: Observer, domain: str, call: Awaitable[AppendResult]
) -> AppendResult:
    """Await one append and report it to `observer`."""
    start = time.perf_counter()
    try:
        result = await call
    except ConcurrencyError:
        observer.appended(domain, "conflict", time.perf_counter() - start, 0)
        raise
    except AngzarrESError:
        observer.appended(domain, "error", time.perf_counter() - start, 0)
        raise
    written = 0 if result.duplicate else result.next_sequence - result.first_sequence
    observer.appended(domain, "ok", time.perf_counter() - start, written)
    return result


async def observe_load(observer: Observer, domain: str, call: Awaitable[History]) -> History:
    """Await one load and report it to `observer`."""
    start = time.perf_counter()
    try:
        return await call
    finally:
        observer.loaded(domain, time.perf_counter() - start)
