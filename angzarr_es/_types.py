"""Records shared by every store implementation."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Literal

import msgspec
from google.protobuf.message import Message

from angzarr_es.codec import RecordedEvent


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
