"""The payloads: one stored event, or one tracking record, per message.

A stored event is the msgpack array `[originator id, version, topic, state]`
(state as msgpack bin, so the library's bytes come back unchanged); a tracking
record is `[application name, notification id]`. Both decode with structs
built once, untracked by the garbage collector (they hold no references to
other objects, and a 1,000-row read makes 1,000 of them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from eventsourcing.persistence import DataError, Notification, StoredEvent

__all__ = [
    "EventRecord",
    "decode_event",
    "decode_tracking",
    "encode_event",
    "encode_tracking",
    "notification",
    "stored_event",
]


class EventRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    originator_id: str
    originator_version: int
    topic: str
    state: bytes


class TrackingRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    application_name: str
    notification_id: int


T = TypeVar("T", bound=StoredEvent)

_encode = msgspec.msgpack.Encoder().encode
_event = msgspec.msgpack.Decoder(EventRecord).decode
_tracking = msgspec.msgpack.Decoder(TrackingRecord).decode


def encode_event(originator_id: str, event: StoredEvent) -> bytes:
    """The payload of `event`, whose originator id is stored as `originator_id`."""
    return _encode(EventRecord(originator_id, event.originator_version, event.topic, event.state))


def encode_tracking(application_name: str, notification_id: int) -> bytes:
    return _encode(TrackingRecord(application_name, notification_id))


def decode_event(payload: bytes, where: str) -> EventRecord:
    """Raises: DataError naming `where`: not a stored event."""
    try:
        return _event(payload)
    except msgspec.DecodeError as exc:
        raise DataError(f"{where}: not a stored event ({exc})") from exc


def decode_tracking(payload: bytes, where: str) -> int:
    """The notification id of a tracking record.

    Raises:
        DataError naming `where`: not a tracking record.
    """
    try:
        return _tracking(payload).notification_id
    except msgspec.DecodeError as exc:
        raise DataError(f"{where}: not a tracking record ({exc})") from exc


def stored_event(record: EventRecord, originator_id: Callable[[str], Any]) -> StoredEvent:
    """The library's own `StoredEvent` (equality compares classes)."""
    return _filled(_new_event(StoredEvent), record, originator_id)


def notification(
    record: EventRecord, notification_id: int, originator_id: Callable[[str], Any]
) -> Notification:
    """The library's own `Notification`."""
    made = _filled(_new_notification(Notification), record, originator_id)
    made.__dict__["id"] = notification_id
    return made


def _filled(made: T, record: EventRecord, originator_id: Callable[[str], Any]) -> T:
    made.__dict__.update(
        originator_id=originator_id(record.originator_id),
        originator_version=record.originator_version,
        topic=record.topic,
        state=record.state,
    )
    return made


# The library's records are frozen dataclasses, whose __init__ sets each field
# through object.__setattr__ (a third of a notification's cost on a 1,000-row
# read); filling __dict__ makes the same object, as the library's own Mapper
# does for domain events.
_new_event = StoredEvent.__new__
_new_notification = Notification.__new__
