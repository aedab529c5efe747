"""One table from angzarr_es's errors to the library's persistence errors.

The recorders raise only the library's exceptions (PEP 249 names), which its
applications catch: `IntegrityError` for a conflict (raised where it is
decided), `OperationalError` when NATS cannot be reached or does not answer
in time, `InterfaceError` after the factory was closed, `DataError` for a
record the stream cannot hold or give back, `NotSupportedError` for a server
or stream without atomic batches, `ProgrammingError` for a stream whose
settings the module cannot use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    InterfaceError,
    NotSupportedError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
)

from angzarr_es._nats.errors import ATOMIC_PUBLISH_DISABLED, BATCH_TOO_LARGE
from angzarr_es.errors import (
    AngzarrESError,
    AppendTooLarge,
    CodecError,
    ConfigError,
    InvalidAggregateId,
    ServerTooOld,
    StoreError,
    StreamConfigError,
)
from angzarr_es.eventsourcing._bridge import CallTimeout, Closed

__all__ = ["TABLE", "persistence_error", "translated"]

TABLE: dict[type[Exception], type[PersistenceError]] = {
    Closed: InterfaceError,
    CallTimeout: OperationalError,
    AppendTooLarge: DataError,
    CodecError: DataError,
    InvalidAggregateId: DataError,
    ServerTooOld: NotSupportedError,
    StreamConfigError: ProgrammingError,
    ConfigError: ProgrammingError,
    # StoreUnavailable, StoreTimeout, PermissionDenied and any other refusal.
    StoreError: OperationalError,
    AngzarrESError: DatabaseError,
}
"""Error class -> the library's class (a class not listed takes its nearest listed base)."""

_BY_ERR_CODE: dict[int, type[PersistenceError]] = {
    ATOMIC_PUBLISH_DISABLED: NotSupportedError,
    BATCH_TOO_LARGE: DataError,
}


def persistence_error(exc: Exception, what: str) -> PersistenceError:
    """The library's error for `exc`, raised while doing `what`."""
    if isinstance(exc, PersistenceError):
        return exc
    cls: type[PersistenceError] = DatabaseError
    for base in type(exc).__mro__:
        if base in TABLE:
            cls = TABLE[base]
            break
    if isinstance(exc, StoreError) and exc.err_code in _BY_ERR_CODE:
        cls = _BY_ERR_CODE[exc.err_code]
    if isinstance(exc, Closed):
        return cls(f"{what}: the factory is closed")
    return cls(f"{what}: {exc}")


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise the library's error for angzarr_es errors raised in the block."""
    try:
        yield
    except PersistenceError:
        raise
    except (AngzarrESError, Closed, CallTimeout) as exc:
        raise persistence_error(exc, what) from exc
