"""Editions: diverged timelines of the same aggregates, deleted whole by a filtered purge.

An edition's commits live on `<prefix>.events.<domain>.<root>.<edition>`: the
event stream captures them, `<prefix>.events.<domain>.*` does not match them,
and one purge with the filter `<prefix>.events.*.*.<edition>` removes them all.
The event stream sets `deny_delete` (no single-message deletes) but not
`deny_purge`, so the purge is allowed; the main timeline has no edition token
and can never match such a filter.
"""

from __future__ import annotations

import msgspec

from angzarr_es import _jsapi as js
from angzarr_es._wire import Wire, api_error

__all__ = ["purge"]


class _PurgeRequest(msgspec.Struct, frozen=True):
    filter: str


class _PurgeResponse(msgspec.Struct, frozen=True):
    purged: int = 0
    error: js.ApiError | None = None


_decode_purge = msgspec.json.Decoder(_PurgeResponse).decode


async def purge(wire: Wire, stream: str, subjects_filter: str) -> int:
    """Purge the messages of `stream` matching `subjects_filter`; returns how many went.

    Raises:
        StoreTimeout, StoreUnavailable, StoreError
    """
    body = js.encode(_PurgeRequest(filter=subjects_filter))
    reply = _decode_purge(
        await wire.api(f"$JS.API.STREAM.PURGE.{stream}", body, what=f"purge {subjects_filter}")
    )
    if reply.error is not None:
        raise api_error(f"purge {subjects_filter} from {stream}", reply.error)
    return reply.purged
