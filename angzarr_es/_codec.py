"""EventBook encoding and decoding, with the store's fast paths (see `angzarr_es.codec`
for the public part).

One commit per JetStream message, events packed as Any.

Type URLs are `"type.googleapis.com/" + full message name` by default (what
`Any.Pack` writes in every language, and what angzarr's clients compare
against); `pack(..., type_url_prefix="/")` keeps the older `"/" + full name`.
Readers accept any prefix before the last `/`. An event whose type is not known
to this process's protobuf descriptor pool stays available as the raw `Any`.

A page that holds no committed event (angzarr's claim check, a pending
two-phase page, a page with no payload) is read as a stand-in, never as an
empty event: see `RecordedEvent`.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Sequence
from typing import Any

import msgspec
from google.protobuf import any_pb2, symbol_database
from google.protobuf.message import DecodeError, EncodeError, Message

from angzarr_es.errors import CodecError
from angzarr_es.pb import core_pb2
from angzarr_es.subjects import MAIN_EDITION

__all__ = [
    "EPOCH",
    "TYPE_URL_PREFIX",
    "RecordedEvent",
    "commit_span",
    "decode_book",
    "elsewhere",
    "encode_commit",
    "extend_irregular",
    "extend_recorded",
    "kind_of",
    "pack",
    "recorded",
    "span",
    "type_name_of",
    "unpack",
]

_UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)
_timedelta = dt.timedelta
_classes: dict[str, type[Message] | None] = {}
_kinds: dict[str, tuple[str, type[Message] | None]] = {}
_symbols = symbol_database.Default()

TYPE_URL_PREFIX = "type.googleapis.com/"
_EventPage = core_pb2.EventPage
_PayloadReference = core_pb2.PayloadReference
_PAGE_NAME: str = _EventPage.DESCRIPTOR.full_name
_REFERENCE_NAME: str = _PayloadReference.DESCRIPTOR.full_name
_no_commit = operator.attrgetter("no_commit")


class RecordedEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One stored event of one aggregate.

    A page that holds no committed event keeps its place in the sequence with a
    stand-in as `event`, whose type no handler of domain events expects:

    - a claim check (angzarr stored the payload elsewhere): the page's
      `angzarr_es.core.PayloadReference` (also `external`);
    - a pending two-phase page (angzarr's `no_commit`, not committed): the
      stored `angzarr_es.core.EventPage` (`pending` is True), whose `event` (an
      `Any`, see `codec.unpack`) or `external` holds the pending payload and
      `cascade_id` its cascade;
    - a page with no payload at all: the stored `EventPage`.
    """

    sequence: int
    """0-based, dense position in the aggregate."""
    event: Message
    """The decoded protobuf message, or the raw `Any` if its type is unknown
    here, or a stand-in (see above)."""
    type_name: str
    """Full protobuf name of the event type, e.g. `examples.player.FundsDeposited`
    (of a stand-in: `angzarr_es.core.PayloadReference` or `angzarr_es.core.EventPage`)."""
    created_at: dt.datetime
    """When the event was appended (aware, UTC)."""
    correlation_id: str = ""
    """The workflow id stamped on the commit ("" if none)."""

    @property
    def pending(self) -> bool:
        """True for a page angzarr wrote pending in a two-phase commit
        (`no_commit`): not a committed event; `event` is the stored page."""
        event = self.event
        return type(event) is _EventPage and event.no_commit

    @property
    def external(self) -> core_pb2.PayloadReference | None:
        """Where the payload is when angzarr stored it outside the book (its claim
        check: the serialized `Any` of the event, at `external.uri`), else None."""
        event = self.event
        if type(event) is _PayloadReference:
            return event
        if type(event) is _EventPage and event.HasField("external"):
            return event.external
        return None


def type_name_of(type_url: str) -> str:
    """The full message name in a type URL (whatever precedes the last `/`)."""
    return type_url.rpartition("/")[2]


def pack(event: Message, type_url_prefix: str = TYPE_URL_PREFIX) -> any_pb2.Any:
    """Pack `event` into an Any with type URL `type_url_prefix + full name`
    (`type.googleapis.com/examples.player.FundsDeposited` by default).

    Raises:
        TypeError: `event` is not a protobuf message.
        ValueError: it lacks a required (proto2) field; `type_url_prefix` does
            not end with `/`.
    """
    if not isinstance(event, Message):
        raise TypeError(f"events must be protobuf messages, got {type(event).__name__}")
    if not type_url_prefix.endswith("/"):
        raise ValueError(
            f"type_url_prefix must end with '/' (e.g. {TYPE_URL_PREFIX!r} or '/'), "
            f"got {type_url_prefix!r}"
        )
    packed = any_pb2.Any()
    packed.type_url = type_url_prefix + event.DESCRIPTOR.full_name
    try:
        packed.value = event.SerializeToString()
    except EncodeError as exc:
        raise ValueError(f"event {event.DESCRIPTOR.full_name} cannot be stored: {exc}") from exc
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
    delta = created_at - EPOCH
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


def elsewhere(edition: str | core_pb2.EventBook, subject: str) -> bool:
    """Whether a commit naming `edition` (or a book, by its cover) stored on
    `subject` belongs to another timeline than the subject's.

    angzarr's bus publishes every edition of an aggregate on the aggregate's
    one subject and names the edition only in the cover; this store's own
    what-if commits live on `<subject>.<edition>`. A commit belongs to the
    subject's timeline when it names the main timeline ("" or "angzarr") or
    the edition the subject ends with (angzarr's roots are UUIDs, never an
    edition's name); any other is passed over by reads: its events are
    another timeline's, not a gap in this one.
    """
    if not isinstance(edition, str):
        cover = edition.cover
        if not cover.HasField("edition"):
            return False
        edition = cover.edition.name
    return bool(edition) and edition != MAIN_EDITION and not subject.endswith("." + edition)


def commit_span(book: core_pb2.EventBook, *, subject: str, stream_sequence: int) -> tuple[int, int]:
    """(first sequence, the aggregate's next sequence) of a stored commit.

    A commit holds at least one page, numbered densely, and its next sequence
    (when set) follows its last page: the same rules a load checks. Anything
    else (an empty or foreign message on the aggregate's subject) says nothing
    about where the aggregate stands, and appending after it would write
    sequences the aggregate already has.

    Raises:
        CodecError: naming the subject and stream sequence.
    """
    pages = book.pages
    count = len(pages)
    first = pages[0].header.sequence if count else 0
    last = pages[count - 1].header.sequence if count else -1
    nxt = book.next_sequence or last + 1
    if not count or last - first != count - 1 or nxt != last + 1:
        raise CodecError(
            f"corrupt EventBook on {subject or '?'} at stream sequence {stream_sequence or '?'}: "
            f"{count} events numbered {first}..{last}, next {nxt} (not a commit of this store)",
            subject=subject,
            stream_sequence=stream_sequence,
        )
    return first, nxt


def kind_of(type_url: str) -> tuple[str, type[Message] | None]:
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
    """The events of `book` whose sequence lies in [lo, hi) (stand-ins included,
    see `RecordedEvent`).

    Raises:
        CodecError: an event's bytes do not parse as its type.
    """
    out: list[RecordedEvent] = []
    # The pages' wrappers, made once in one call: the pending check and the
    # decoding loop then share them.
    pages = book.pages[:]
    count = len(pages)
    if count:
        first = pages[0].header.sequence
        last = pages[count - 1].header.sequence if count > 1 else first
        correlation_id = book.cover.correlation_id
        try:
            if any(map(_no_commit, pages)) or not extend_recorded(
                out, pages, first, last, correlation_id, lo, hi, subject
            ):
                extend_irregular(out, pages, correlation_id, lo, hi, subject)
        except OverflowError as exc:  # a timestamp no datetime can hold
            raise CodecError(
                f"corrupt EventBook on {subject or '?'}: timestamp out of range: {exc}",
                subject=subject,
            ) from exc
    return out


def extend_recorded(
    out: list[RecordedEvent],
    pages: Sequence[core_pb2.EventPage],
    first: int,
    last: int,
    correlation_id: str,
    lo: int,
    hi: int | None,
    subject: str,
) -> bool:
    """Append to `out` the events of a commit's (non-empty) `pages` in [lo, hi);
    False, with nothing appended, if a page in range holds no event with a type
    URL (a claim check, or a pending page in the read path's views): the caller
    then reads the commit with `extend_irregular`.

    `first` and `last` are the first and last page's sequences. A commit's
    pages normally carry consecutive sequences and one timestamp; when the
    first and last page show exactly that, the pages between are numbered from
    the first and share its timestamp (reading a header and a timestamp per
    event was a third of the decoding cost).

    Raises:
        CodecError: an event's bytes do not parse as its type.
    """
    count = len(pages)
    stamp = pages[0].created_at
    seconds, nanos = stamp.seconds, stamp.nanos
    if count > 1:
        tail = pages[count - 1].created_at
        if last != first + count - 1 or tail.seconds != seconds or tail.nanos != nanos:
            return _extend_each(out, pages, correlation_id, lo, hi, subject, careful=False)
    created_at = EPOCH + _timedelta(0, seconds, nanos // 1000)
    selected, seq = span(pages, first, lo, hi)
    append = out.append
    kinds = _kinds
    mark = len(out)
    # None is no URL: the first page always looks its kind up, so an empty URL
    # (no event) is seen there or at a change of URL, never per page. (A
    # sentinel string is a URL someone can store: "\0" was, found by Hypothesis.)
    type_url: str | None = None
    name = ""
    cls: type[Message] | None = None
    for page in selected:
        packed = page.event
        url = packed.type_url
        if url != type_url:
            if not url:
                del out[mark:]
                return False
            name, cls = kinds.get(url) or kind_of(url)
            type_url = url
        event: Message
        if cls is None:
            event = packed
        else:
            try:
                event = cls.FromString(packed.value)
            except DecodeError as exc:
                raise _undecodable(url, exc, seq, subject) from exc
        append(
            RecordedEvent(
                sequence=seq,
                event=event,
                type_name=name,
                created_at=created_at,
                correlation_id=correlation_id,
            )
        )
        seq += 1
    return True


def extend_irregular(
    out: list[RecordedEvent],
    pages: Sequence[core_pb2.EventPage],
    correlation_id: str,
    lo: int,
    hi: int | None,
    subject: str,
) -> None:
    """Append to `out` the events of a commit's `pages` (of a real `EventBook`)
    in [lo, hi), each page read on its own: its sequence, its timestamp, and
    what it holds (an event, or a stand-in: see `RecordedEvent`).

    Raises:
        CodecError: an event's bytes do not parse as its type.
    """
    _extend_each(out, pages, correlation_id, lo, hi, subject, careful=True)


def span(pages: Sequence[Any], first: int, lo: int, hi: int | None) -> tuple[Sequence[Any], int]:
    """The pages of a dense commit starting at `first` whose sequence lies in [lo, hi),
    and the sequence of the first of them."""
    count = len(pages)
    begin = lo - first if lo > first else 0
    end = count if hi is None or hi - first >= count else hi - first
    if begin == 0 and end == count:
        return pages, first
    return (pages[begin:end] if begin < end else ()), first + begin


def _extend_each(
    out: list[RecordedEvent],
    pages: Sequence[core_pb2.EventPage],
    correlation_id: str,
    lo: int,
    hi: int | None,
    subject: str,
    *,
    careful: bool,
) -> bool:
    """The general case: every page's own sequence and timestamp. Not `careful`:
    False (nothing appended) at a page in range without an event type URL."""
    last_stamp: tuple[int, int] | None = None
    created_at = EPOCH
    mark = len(out)
    for page in pages:
        seq = page.header.sequence
        if seq < lo or (hi is not None and seq >= hi):
            continue
        stamp = page.created_at
        key = (stamp.seconds, stamp.nanos)
        if key != last_stamp:
            created_at = EPOCH + _timedelta(0, key[0], key[1] // 1000)
            last_stamp = key
        event: Message
        if careful and (page.no_commit or page.WhichOneof("payload") != "event"):
            if page.HasField("external") and not page.no_commit:
                name, event = _REFERENCE_NAME, page.external
            else:
                name, event = _PAGE_NAME, page
        else:
            packed = page.event
            url = packed.type_url
            if not (url or careful):
                del out[mark:]
                return False
            name, cls = kind_of(url)
            event = packed
            if cls is not None:
                try:
                    event = cls.FromString(packed.value)
                except DecodeError as exc:
                    raise _undecodable(url, exc, seq, subject) from exc
        out.append(
            RecordedEvent(
                sequence=seq,
                event=event,
                type_name=name,
                created_at=created_at,
                correlation_id=correlation_id,
            )
        )
    return True


def _undecodable(type_url: str, exc: DecodeError, seq: int, subject: str) -> CodecError:
    return CodecError(
        f"event of type {type_url!r} does not decode: {exc} (sequence {seq} on {subject})",
        subject=subject,
    )
