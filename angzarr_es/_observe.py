"""The store's optional observer: how `angzarr_es.metrics` hooks in.

`StoreContext.observer` is None unless metrics are switched on, so the hot
path pays one attribute test and nothing else.
"""

from __future__ import annotations

from typing import Protocol


class StoreObserver(Protocol):
    """Called by the store at the points metrics and tracing need."""

    def commit_headers(self, headers: dict[str, str]) -> None:
        """Add headers (e.g. `traceparent`) to a commit about to be published."""

    def retried(self, domain: str, reason: str) -> None:
        """One more attempt at an append: `timeout`, `in_process` or `lost_race`."""

    def redelivered(self, consumer: str, count: int = 1) -> None:
        """A projector was handed a commit again (delivery count above 1)."""

    def dead_lettered(self, consumer: str) -> None:
        """A projector moved a commit to the dead-letter stream."""
