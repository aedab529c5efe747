"""The read path's hot loop: a page of stored commits into RecordedEvents.

Each commit is checked against the aggregate's dense sequence (a foreign,
repeated or skipping commit on the subject would corrupt the history silently)
and its events in the requested range are appended to the caller's list.

Commits are parsed with a typed view of the book (`_typed`) when the store can
guess their event type: the type of the last event it decoded. A commit whose
events are not all of that type is parsed again as a plain `EventBook`; a store
whose guesses keep missing (commits mixing event types) stops guessing for a
while, so the cost of a wrong guess (one extra parse of the book) stays small.

Both views show a page that holds no committed event (a claim check, a pending
two-phase page) as a page without an event type URL; such a commit, rare, is
parsed once more as the real `EventBook` and read page by page
(`_codec.extend_irregular`), so the common commit pays nothing for them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

from angzarr_es import _codec
from angzarr_es._codec import RecordedEvent, elsewhere
from angzarr_es.pb import core_pb2
from angzarr_es.store import _typed

__all__ = ["Corrupt", "Guess", "Scan", "decode_commits"]

# A hit earns one credit (up to CREDIT_CAP); a miss costs MISS_COST. Below zero
# the guess is off for COOLDOWN commits.
CREDIT_CAP = 64
MISS_COST = 8
COOLDOWN = 256

_parse_book = _typed.plain_parser()
_parse_real = core_pb2.EventBook.FromString
_EPOCH = _codec.EPOCH
_timedelta = dt.timedelta


@dataclass(slots=True)
class Guess:
    """The event type a store expects in the next commit it reads."""

    parse: Callable[[bytes], core_pb2.EventBook] | None = None
    # (type URL, type name, class) of the guessed type.
    typed: tuple[str, str, Any] = ("", "", None)
    credit: int = 0
    cooldown: int = 0

    def learn(self, pages: Sequence[core_pb2.EventPage], missed: bool) -> None:
        """After a plain decode: expect the type of the commit's last event next."""
        if missed:
            self.credit -= MISS_COST
            if self.credit < 0:
                self.parse, self.credit, self.cooldown = None, 0, COOLDOWN
                return
        elif self.cooldown:
            self.cooldown -= 1
            return
        url = pages[len(pages) - 1].event.type_url
        name, cls = _codec.kind_of(url)
        self.parse = None if cls is None else _typed.parser_for(cls)
        self.typed = (url, name, cls)


@dataclass(slots=True)
class Scan:
    """Outcome of reading an aggregate's commits."""

    next_sequence: int = 0
    stream_seq: int = 0
    complete: bool = True
    # False when the scan starts mid-subject (after a snapshot): the first
    # commit read then fixes where the dense sequence stands.
    anchored: bool = True
    guess: Guess = field(default_factory=Guess)
    # For the hot-aggregate cache (_hot): the last commit decoded, as stored,
    # and the commits and payload bytes decoded so far.
    tail: bytes = b""
    commits: int = 0
    payload_bytes: int = 0


class Corrupt(Exception):
    """Commit `index` of the page is not a commit of this store."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


def decode_commits(
    subject: str,
    payloads: Sequence[bytes],
    lo: int,
    hi: int | None,
    scan: Scan,
    out: list[RecordedEvent],
    offset: int = 0,
) -> bool:
    """Decode commits, appending their events in [lo, hi) to `out` and updating `scan`.

    Returns False if it stopped at a commit that starts at or after `hi`.
    `offset` is the index of `payloads[0]` in its page (for `Corrupt`).

    Raises:
        Corrupt: a payload is not an EventBook, or not the aggregate's next commit.
        CodecError: an event does not decode as its type.
    """
    extend = _codec.extend_recorded
    span = _codec.span
    guess = scan.guess
    append = out.append
    index = offset
    try:
        for index, payload in enumerate(payloads, offset):
            parse = guessed = guess.parse
            book: Any = None
            if parse is not None:
                try:
                    book = parse(payload)
                except DecodeError:  # not of the guessed type, or corrupt: the plain parse tells
                    book = None
            if book is None:
                parse = None
                book = _plain(payload, index)
            cover = book.cover
            if cover.HasField("edition") and elsewhere(cover.edition.name, subject):
                continue  # another timeline's commit on the shared subject
            pages = book.pages
            count = len(pages)
            nxt = book.next_sequence
            due = scan.next_sequence
            if count:
                # The first and last page and the book's next sequence catch a
                # foreign, repeated or skipping commit without touching every page
                # (a commit of ours has one timestamp, and the pages between are
                # then numbered from the first).
                head = tail = pages[0]
                first = last = head.header.sequence
                if count > 1:
                    tail = pages[count - 1]
                    last = tail.header.sequence
                if not nxt:
                    nxt = last + 1
                if not scan.anchored:
                    scan.next_sequence = due = first
                    scan.anchored = True
                if first != due or last != due + count - 1:
                    raise Corrupt(
                        index,
                        f"events {first}..{last} where {due}.. was due (not a commit of this store)",
                    )
            if nxt != due + count:
                raise Corrupt(
                    index,
                    f"commit moves the aggregate to {nxt}, not {due + count} "
                    "(not a commit of this store)",
                )
            if not count:
                continue
            if hi is not None and first >= hi:
                scan.complete = False
                return False
            scan.next_sequence = nxt
            if last < lo:
                continue
            correlation_id = cover.correlation_id
            if parse is not None:
                # Typed view: each page's event.value is already the message. Taken
                # when every selected event has the guessed type and the commit
                # has one timestamp; anything else is decoded from the plain book.
                stamp = head.created_at
                seconds, nanos = stamp.seconds, stamp.nanos
                if tail is head or (
                    (other := tail.created_at).seconds == seconds and other.nanos == nanos
                ):
                    created_at = _EPOCH + _timedelta(0, seconds, nanos // 1000)
                    type_url, name, cls = guess.typed
                    mark = len(out)
                    if lo <= first and (hi is None or hi > last):
                        # A slice builds the page wrappers in one call (cheaper
                        # than iterating the container); one page is the head.
                        selected, seq = (pages[:] if tail is not head else (head,)), first
                    else:
                        selected, seq = span(pages, first, lo, hi)
                    for page in selected:
                        packed = page.event
                        url = packed.type_url
                        if url != type_url:
                            # The same type under another prefix ("/" and
                            # "type.googleapis.com/" histories) is still a hit.
                            if _codec.kind_of(url)[1] is not cls:
                                del out[mark:]
                                break
                            type_url = url
                            guess.typed = (url, name, cls)
                        append(
                            RecordedEvent(
                                sequence=seq,
                                event=packed.value,
                                type_name=name,
                                created_at=created_at,
                                correlation_id=correlation_id,
                            )
                        )
                        seq += 1
                    else:
                        if guess.credit < CREDIT_CAP:
                            guess.credit += 1
                        continue
                pages = _plain(payload, index).pages
            if not extend(out, pages, first, last, correlation_id, lo, hi, subject):
                pages = _real(payload, index).pages
                _codec.extend_irregular(out, pages, correlation_id, lo, hi, subject)
            guess.learn(pages, missed=guessed is not None)
    except OverflowError as exc:  # a timestamp no datetime can hold
        raise Corrupt(index, f"timestamp out of range: {exc}") from exc
    return True


def _plain(payload: bytes, index: int) -> core_pb2.EventBook:
    try:
        return _parse_book(payload)
    except DecodeError as exc:
        raise Corrupt(index, str(exc)) from exc


def _real(payload: bytes, index: int) -> core_pb2.EventBook:
    try:
        return _parse_real(payload)
    except DecodeError as exc:  # the views parsed it: never expected
        raise Corrupt(index, str(exc)) from exc
