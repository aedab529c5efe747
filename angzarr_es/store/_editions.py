"""Editions: diverged timelines of the same aggregates, deleted whole by a filtered purge.

An edition's commits live on `<prefix>.events.<domain>.<root>.<edition>`: the
event stream captures them, `<prefix>.events.<domain>.*` does not match them,
and one purge with the filter `<prefix>.events.*.*.<edition>` removes them all.
The event stream sets `deny_delete` (no single-message deletes) but not
`deny_purge`, so the purge is allowed; the main timeline has no edition token
and can never match such a filter.
"""

from __future__ import annotations

from angzarr_es._nats import Wire

__all__ = ["purge"]


async def purge(wire: Wire, stream: str, subjects_filter: str) -> int:
    """Purge the messages of `stream` matching `subjects_filter`; returns how many went.

    Raises:
        StoreTimeout, StoreUnavailable, StoreError
    """
    return await wire.js.stream_purge(stream, subjects_filter)
