"""EventBook encoding: one commit per JetStream message, events packed as Any.

Type URLs are `"/" + full message name` (angzarr's convention); readers accept
any prefix before the last `/`. An event whose type is not known to this
process's protobuf descriptor pool stays available as the raw `Any`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import msgspec
from google.protobuf import any_pb2, symbol_database, timestamp_pb2
from google.protobuf.message import DecodeError, Message

from angzarr_es.errors import CodecError
from angzarr_es.pb import core_pb2

__all__ = ["RecordedEvent", "decode_book", "encode_commit", "pack", "type_name_of", "unpack"]

_UTC = dt.UTC
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)
_timedelta = dt.timedelta
_classes: dict[str, type[Message] | None] = {}
_kinds: dict[str, tuple[str, type[Message] | None]] = {}
_symbols = symbol_database.Default()


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One stored event of one aggregate."""

    sequence: int
    """0-based, dense position in the aggregate."""
    event: Message
    """The decoded protobuf message, or the raw `Any` if its type is unknown here."""
    type_name: str
    """Full protobuf name of the event type, e.g. `examples.player.FundsDeposited`."""
    created_at: dt.datetime
    """When the event was appended (aware, UTC)."""
    correlation_id: str = ""
    """The workflow id stamped on the commit ("" if none)."""


def type_name_of(type_url: str) -> str:
    """The full message name in a type URL (whatever precedes the last `/`)."""
    return type_url.rpartition("/")[2]


def pack(event: Message) -> any_pb2.Any:
    """Pack `event` into an Any with type URL `"/" + full name`.

    Raises:
        TypeError: `event` is not a protobuf message.
    """
    if not isinstance(event, Message):
        raise TypeError(f"events must be protobuf messages, got {type(event).__name__}")
    packed = any_pb2.Any()
    packed.type_url = "/" + event.DESCRIPTOR.full_name
    packed.value = event.SerializeToString()
    return packed


def _class_for(name: str) -> type[Message] | None:
    try:
        return _classes[name]
    except KeyError:
        pass
    try:
        cls: type[Message] | None = _symbols.GetSymbol(name)
    except KeyError:
        cls = None
    if cls is not None:
        # Cache only hits: a type's module may be imported later.
        _classes[name] = cls
    return cls


def unpack(packed: any_pb2.Any) -> Message:
    """Decode an Any to its message class, or return it as is if the type is unknown.

    Raises:
        CodecError: the bytes do not parse as the named type.
    """
    cls = _class_for(type_name_of(packed.type_url))
    if cls is None:
        return packed
    try:
        return cls.FromString(packed.value)
    except DecodeError as exc:
        raise CodecError(f"event of type {packed.type_url!r} does not decode: {exc}") from exc


def encode_commit(
    *,
    domain: str,
    root: bytes,
    first_sequence: int,
    events: Sequence[any_pb2.Any],
    correlation_id: str,
    created_at: dt.datetime,
    edition: str = "",
) -> bytes:
    """Serialize one commit: an EventBook with the cover and the new pages."""
    book = core_pb2.EventBook()
    cover = book.cover
    cover.root.value = root
    cover.domain = domain
    if correlation_id:
        cover.correlation_id = correlation_id
    if edition:
        cover.edition.name = edition
    # Exact integer arithmetic (microsecond precision), cheaper than
    # Timestamp.FromDatetime, and the stamp is set in place on each page
    # instead of being copied from a temporary message.
    delta = created_at - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    nanos = delta.microseconds * 1000
    pages = book.pages
    seq = first_sequence
    for packed in events:
        page = pages.add()
        page.header.sequence = seq
        stamp = page.created_at
        stamp.seconds = seconds
        if nanos:
            stamp.nanos = nanos
        page.event.CopyFrom(packed)
        seq += 1
    book.next_sequence = seq
    return book.SerializeToString()


def decode_book(
    payload: bytes, *, subject: str = "", stream_sequence: int = 0
) -> core_pb2.EventBook:
    """Parse one stored commit.

    Raises:
        CodecError: naming the subject and stream sequence.
    """
    try:
        return core_pb2.EventBook.FromString(payload)
    except DecodeError as exc:
        raise CodecError(
            f"corrupt EventBook on {subject or '?'} at stream sequence {stream_sequence or '?'}: {exc}",
            subject=subject,
            stream_sequence=stream_sequence,
        ) from exc


def to_datetime(stamp: timestamp_pb2.Timestamp) -> dt.datetime:
    """An aware UTC datetime (microsecond precision) from a Timestamp."""
    return _EPOCH + dt.timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)


def book_next_sequence(book: core_pb2.EventBook) -> int:
    """The aggregate's next sequence after this commit."""
    if book.next_sequence:
        return book.next_sequence
    if book.pages:
        return book.pages[-1].header.sequence + 1
    return 0


def _kind(type_url: str) -> tuple[str, type[Message] | None]:
    """(type name, message class or None) for a type URL, cached once the class is known."""
    kind = _kinds.get(type_url)
    if kind is None:
        name = type_name_of(type_url)
        cls = _class_for(name)
        kind = (name, cls)
        if cls is not None:
            _kinds[type_url] = kind
    return kind


def recorded(
    book: core_pb2.EventBook, lo: int = 0, hi: int | None = None, *, subject: str = ""
) -> list[RecordedEvent]:
    """The events of `book` whose sequence lies in [lo, hi).

    Raises:
        CodecError: an event's bytes do not parse as its type.
    """
    out: list[RecordedEvent] = []
    append = out.append
    correlation_id = book.cover.correlation_id
    pages = book.pages
    count = len(pages)
    # A commit's pages carry consecutive sequences and non-decreasing
    # timestamps (normally one timestamp). When the first and last page show
    # exactly that, the pages between need not be asked for theirs: reading
    # a header and a timestamp per event was a third of the decoding cost.
    uniform = False
    first = 0
    created_at = _EPOCH
    last_stamp: tuple[int, int] | None = None
    if count > 1:
        head, tail = pages[0], pages[count - 1]
        first = head.header.sequence
        stamp = head.created_at
        if tail.header.sequence == first + count - 1 and tail.created_at == stamp:
            uniform = True
            created_at = _EPOCH + _timedelta(0, stamp.seconds, stamp.nanos // 1000)
    for index, page in enumerate(pages):
        seq = first + index if uniform else page.header.sequence
        if seq < lo or (hi is not None and seq >= hi):
            continue
        packed = page.event
        type_url = packed.type_url
        name, cls = _kinds.get(type_url) or _kind(type_url)
        event: Message
        if cls is None:
            event = packed
        else:
            try:
                event = cls.FromString(packed.value)
            except DecodeError as exc:
                raise CodecError(
                    f"event of type {type_url!r} does not decode: {exc} (sequence {seq} on {subject})",
                    subject=subject,
                ) from exc
        if not uniform:
            stamp = page.created_at
            key = (stamp.seconds, stamp.nanos)
            if key != last_stamp:
                created_at = _EPOCH + _timedelta(0, key[0], key[1] // 1000)
                last_stamp = key
        append(
            RecordedEvent(
                sequence=seq,
                event=event,
                type_name=name,
                created_at=created_at,
                correlation_id=correlation_id,
            )
        )
    return out
