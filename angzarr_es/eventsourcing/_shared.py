"""What the read and write paths of one factory share."""

from __future__ import annotations

from typing import NamedTuple

from angzarr_es._nats import Wire
from angzarr_es.store._cache import PositionCache

__all__ = ["Shared"]


class Shared(NamedTuple):
    """One factory's connection and stream, and what its reads and writes learn."""

    wire: Wire
    stream: str
    positions: PositionCache
    """Subject -> its last version (or notification id) and stream sequence,
    fed by every read and write."""
    written: dict[str, int]
    """Notification log (subject filter) -> the last notification id this
    factory wrote to it: no read of the log ends before it."""
