"""Editions: diverged timelines of the same aggregates, deleted whole by a filtered purge.

An edition's commits live on `<prefix>.events.<domain>.<root>.<edition>`: the
event stream captures them, `<prefix>.events.<domain>.*` does not match them,
and one purge with the filter `<prefix>.events.*.*.<edition>` removes them all.
The event stream sets `deny_delete` (no single-message deletes) but not
`deny_purge`, so the purge is allowed; the main timeline has no edition token
and can never match such a filter.
"""

from __future__ import annotations

from angzarr_es import _provision
from angzarr_es._nats import Wire
from angzarr_es.store._context import StoreContext
from angzarr_es.subjects import Subjects

__all__ = ["delete", "purge"]


async def purge(wire: Wire, stream: str, subjects_filter: str) -> int:
    """Purge the messages of `stream` matching `subjects_filter`; returns how many went.

    Raises:
        StoreTimeout, StoreUnavailable, StoreError
    """
    return await wire.js.stream_purge(stream, subjects_filter)


async def delete(ctx: StoreContext, subjects: Subjects, name: str) -> int:
    """Delete edition `name` (validated, not the main timeline) in every
    stream holding it, snapshots first; returns how many commits went. The
    client's position and hot caches are emptied (another process notices on
    its next read or append of each aggregate).

    Raises:
        StoreTimeout, StoreUnavailable, StoreError
    """
    wire, streams = ctx.wire, ctx.streams
    # Snapshots first: a missing snapshot stream then fails before any
    # event goes (events went first before, leaving the edition half
    # deleted), and events whose snapshots are gone still load.
    await purge(wire, streams.snapshots, subjects.edition_snapshots(name))
    if streams.per_domain:
        purged = 0
        for domain, stream in await _provision.domain_streams(wire, streams):
            purged += await purge(wire, stream, subjects.domain_aggregates(domain, name))
    else:
        purged = await purge(wire, streams.single, subjects.edition_events(name))
    ctx.cache.clear()
    ctx.hot.clear()
    return purged
