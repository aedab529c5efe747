"""What a failed write reports about what the stream may hold.

    nothing stored   StoreUnavailable, PermissionDenied, another StoreError
    unknown          StoreTimeout: stored once or not at all
    stored           a result

A timeout before anything of the write was sent (a read looking up the
position, the correlation entry) is "nothing stored"; any failure after an
attempt that may have been stored is "unknown". docs/reliability.md lists every
failure point of the write path and what it reports.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from angzarr_es.errors import StoreError, StoreTimeout, StoreUnavailable

__all__ = ["nothing_sent", "nothing_stored", "unknown_outcome"]


def nothing_stored(what: str, exc: StoreTimeout) -> StoreUnavailable:
    """The error for a timeout met while nothing of the write can have been stored."""
    return StoreUnavailable(f"{what}: nothing stored: {exc}", err_code=exc.err_code)


def unknown_outcome(what: str, exc: StoreError) -> StoreTimeout:
    """The error for `exc`, met after an attempt of the write may have been stored."""
    return StoreTimeout(
        f"{what}: outcome unknown: an attempt was sent, then {exc}", err_code=exc.err_code
    )


@contextlib.contextmanager
def nothing_sent(what: str) -> Iterator[None]:
    """Around the steps before a write is sent: a timeout there is `nothing_stored`."""
    try:
        yield
    except StoreTimeout as exc:
        raise nothing_stored(what, exc) from exc
