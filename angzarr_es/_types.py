"""Records shared by every store implementation."""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Callable, Iterable
from typing import Generic, Literal, TypeVar

import msgspec
from google.protobuf import any_pb2
from google.protobuf.message import Message

from angzarr_es import _codec
from angzarr_es._codec import RecordedEvent
from angzarr_es.errors import InvalidAggregateId, InvalidSnapshot
from angzarr_es.pb import core_pb2
from angzarr_es.subjects import AggregateId, as_uuid, correlation_token


class Expected(enum.Enum):
    """Sentinels for `append(expected=...)`."""

    ANY = "any"
    """Append at whatever the aggregate's next sequence is."""

    def __repr__(self) -> str:
        return f"angzarr_es.{self.name}"


ANY: Literal[Expected.ANY] = Expected.ANY
ExpectedVersion = int | Literal[Expected.ANY]


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one append wrote."""

    first_sequence: int
    """Sequence of the first event written (== next_sequence when nothing was)."""
    next_sequence: int
    """The aggregate's next sequence after this append."""
    stream_sequence: int = 0
    """JetStream stream sequence of the commit (0 when nothing was written)."""
    duplicate: bool = False
    """True when an earlier call with the same `idempotency_key` had stored
    this commit: the fields describe that commit, and nothing was stored."""


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """An aggregate's state as saved after the event with `sequence`."""

    sequence: int
    """Sequence of the last event the state includes."""
    state: Message
    """The decoded protobuf state, or the raw `Any` if its type is unknown here."""
    retention: int = 0
    """angzarr's `SnapshotRetention` as saved (`core_pb2.RETENTION_DEFAULT` = 0,
    `RETENTION_PERSIST`, `RETENTION_TRANSIENT`): kept and returned, not acted
    on (this store keeps the latest snapshot and `snapshot_history` older ones,
    whatever it says)."""
    created_at: dt.datetime | None = None
    """When the snapshot was saved (aware, UTC); None if it was stored without."""


class History(msgspec.Struct, frozen=True, kw_only=True):
    """Events of one aggregate, in order."""

    events: list[RecordedEvent]
    next_sequence: int
    """The aggregate's next sequence, even when only part of it was loaded."""
    snapshot: Snapshot | None = None
    """The snapshot the events follow (`load(..., snapshot=True)`), else None."""


KEY_MAX = 200


def check_idempotency_key(key: object) -> str:
    """Validate an append's `idempotency_key` ("" for none).

    Raises:
        TypeError: not a str.
        ValueError: longer than 200 characters, or not printable ASCII
            without blanks (it travels as a message header).
    """
    if not isinstance(key, str):
        raise TypeError(f"idempotency_key must be a str, got {key!r}")
    if len(key) > KEY_MAX or not (key.isascii() and key.isprintable()) or " " in key:
        raise ValueError(
            f"idempotency_key must be at most {KEY_MAX} printable ASCII characters "
            f"without blanks, got {key!r}"
        )
    return key


def check_expected(expected: object) -> ExpectedVersion:
    """Validate `expected`.

    Raises:
        TypeError: not an int nor ANY.
        ValueError: a negative int.
    """
    if expected is ANY:
        return ANY
    if not isinstance(expected, int) or isinstance(expected, bool):
        raise TypeError(f"expected must be an int or angzarr_es.ANY, got {expected!r}")
    if expected < 0:
        raise ValueError(f"expected must be >= 0, got {expected}")
    return expected


def _check_sequence(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_range(from_sequence: object, to_sequence: object) -> tuple[int, int | None]:
    """Validate a half-open [from, to) range.

    Raises:
        TypeError, ValueError: bounds that are not non-negative ints with from <= to.
    """
    lo = _check_sequence("from_sequence", from_sequence)
    hi = None if to_sequence is None else _check_sequence("to_sequence", to_sequence)
    if hi is not None and hi < lo:
        raise ValueError(f"to_sequence ({hi}) must be >= from_sequence ({lo})")
    return lo, hi


def check_as_of(as_of: object, snapshot: bool) -> None:
    """Validate `load(..., as_of=)`.

    Raises:
        TypeError: not a datetime.
        ValueError: naive, or combined with `snapshot=True`.
    """
    if as_of is None:
        return
    if not isinstance(as_of, dt.datetime):
        raise TypeError(f"as_of must be a datetime, got {as_of!r}")
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError("as_of must be timezone-aware (e.g. datetime.now(UTC))")
    if snapshot:
        raise ValueError("as_of cannot be combined with snapshot=True")


Clock = Callable[[], dt.datetime]
"""What the time of a commit or snapshot is read from (aware datetimes)."""
utc_now: Clock = functools.partial(dt.datetime.now, dt.UTC)


def check_clock(clock: object) -> Clock:
    """Validate a client's `clock=` (None: `utc_now`), calling it once.

    Raises:
        TypeError: not callable, or it did not return a timezone-aware datetime.
    """
    if clock is None:
        return utc_now
    if not callable(clock):
        raise TypeError(f"clock must be a function returning a datetime, got {clock!r}")
    now = clock()
    if not isinstance(now, dt.datetime) or now.utcoffset() is None:
        raise TypeError(
            f"clock() returned {now!r}; it must return a timezone-aware datetime "
            "(e.g. lambda: datetime.now(UTC))"
        )
    return clock


# -- arguments, checked alike by every store ------------------------------------

K = TypeVar("K")
MAX_SNAPSHOT_SEQUENCE = 2**32 - 1  # core.Snapshot.sequence is a uint32


class Append(msgspec.Struct, Generic[K], frozen=True, kw_only=True):
    """An append's arguments, checked, with its events packed."""

    where: K
    """Where the aggregate lives in the store (a subject, a dict key)."""
    packed: list[any_pb2.Any]
    expected: ExpectedVersion
    correlation_id: str
    idempotency_key: str


def prepare_append(
    root: AggregateId,
    events: Iterable[Message],
    expected: object,
    correlation_id: object,
    idempotency_key: object,
    where: Callable[[AggregateId], K],
    type_url_prefix: str = _codec.TYPE_URL_PREFIX,
) -> Append[K]:
    """Check an append's arguments, in the order every store checks them, and
    pack its events (type URLs `type_url_prefix` + full name); `where(root)`
    places the aggregate (checking `root`).

    Raises:
        TypeError: `expected` neither an int nor ANY; a non-str key or
            correlation id; `events` one message, or holding a non-message.
        ValueError: a negative `expected`, a bad key, an event lacking a
            required field.
        InvalidAggregateId: a bad `root`, or a correlation id too long.
    """
    checked = check_expected(expected)
    key = check_idempotency_key(idempotency_key)
    if isinstance(events, Message):
        raise TypeError("events must be a list of protobuf messages, not one message")
    pack = _codec.pack
    packed = [pack(e, type_url_prefix) for e in events]
    place = where(root)
    if not isinstance(correlation_id, str):
        raise TypeError(f"correlation_id must be a str, got {correlation_id!r}")
    if correlation_id:
        correlation_token(correlation_id)  # the index subject's token: its checks
    return Append(
        where=place,
        packed=packed,
        expected=checked,
        correlation_id=correlation_id,
        idempotency_key=key,
    )


def prepare_read(
    root: AggregateId,
    from_sequence: object,
    to_sequence: object,
    where: Callable[[AggregateId], K],
    *,
    as_of: object = None,
    snapshot: bool = False,
) -> tuple[K, int, int | None]:
    """Check a load's or an iteration's arguments: (where, lo, hi).

    Raises:
        TypeError, ValueError: a bad range or `as_of` (see `check_range`,
            `check_as_of`).
        InvalidAggregateId: a bad `root`.
    """
    lo, hi = check_range(from_sequence, to_sequence)
    check_as_of(as_of, snapshot)
    return where(root), lo, hi


def check_uuid_root(root: AggregateId) -> None:
    """Per-domain layout (angzarr's): refuse an aggregate id that is not a UUID.

    Its UTF-8 being 16 bytes is not enough: angzarr would read those bytes as
    a UUID, another aggregate than the one on the subject.

    Raises:
        InvalidAggregateId: `root` is not a UUID nor a UUID's text.
    """
    if as_uuid(root) is None:
        raise InvalidAggregateId(
            f"aggregate id {root!r} is not a UUID: in the per-domain layout (angzarr's) "
            "every root must be a UUID, because angzarr reads Cover.root as 16 bytes "
            "(Uuid::from_slice) and fails on anything else; use a uuid.UUID or its text"
        )


def check_snapshot(state: object, sequence: object, retention: object = 0) -> int:
    """Check `save_snapshot`'s arguments; the sequence.

    Raises:
        TypeError: `state` is not a protobuf message.
        InvalidSnapshot: `sequence` is not an int in [0, 2**32), or
            `retention` not one of angzarr's `SnapshotRetention` values.
    """
    if not isinstance(state, Message):
        raise TypeError(f"state must be a protobuf message, got {type(state).__name__}")
    if not isinstance(sequence, int) or isinstance(sequence, bool):
        raise InvalidSnapshot(f"snapshot sequence must be an int, got {sequence!r}")
    if not 0 <= sequence <= MAX_SNAPSHOT_SEQUENCE:
        raise InvalidSnapshot(f"snapshot sequence must be in [0, 2**32), got {sequence}")
    known = core_pb2.SnapshotRetention.values()
    if isinstance(retention, bool) or retention not in known:
        names = ", ".join(
            f"core_pb2.{core_pb2.SnapshotRetention.Name(v)} ({v})" for v in sorted(known)
        )
        raise InvalidSnapshot(f"snapshot retention must be one of {names}; got {retention!r}")
    return sequence
