"""Editions angzarr wrote: its bus publishes every edition of an aggregate on
the aggregate's one subject and names the edition only in `cover.edition`.

This store's own what-if editions live on `<subject>.<edition>`, a timeline of
their own from sequence 0. An edition store reads that subject first; when it
holds nothing, the edition's history is angzarr's, assembled from the
aggregate's subject as angzarr's event stores define it
(`EventStore::get_with_divergence` and the backends' `composite_read` at
angzarr f97af362):

- the divergence point `d` is the edition's explicit one for the domain
  (`Edition.divergences`, carried in the covers of the edition's books), else
  the first sequence of the edition's own events (angzarr's "implicit
  divergence");
- the history is the main timeline's events below `d`, then the edition's
  events, which must run densely from `d`.

An edition with no events at all is empty here, as this store's editions
always were (angzarr would answer with the whole main timeline). Reading it
costs a read of the aggregate's whole subject, every time (no cache).
"""

from __future__ import annotations

from typing import Any

from angzarr_es import _codec
from angzarr_es._codec import RecordedEvent
from angzarr_es.errors import CodecError
from angzarr_es.pb import core_pb2
from angzarr_es.store._context import StoreContext
from angzarr_es.store._whole import Stored, subject_books
from angzarr_es.subjects import MAIN_EDITION

__all__ = ["divergence", "has_edition", "history"]


async def _books(ctx: StoreContext, subject: str) -> list[Stored]:
    """(stream sequence, book) of every message on `subject`."""
    return await subject_books(ctx.wire, ctx.streams.of_subject(subject), subject)


def _timeline(book: core_pb2.EventBook) -> str:
    """The edition a book names ("" for the main timeline)."""
    if not book.cover.HasField("edition"):
        return ""
    name = book.cover.edition.name
    return "" if name == MAIN_EDITION else name


def divergence(books: list[Stored], domain: str) -> int:
    """Where an edition leaves the main timeline: its explicit divergence for
    `domain` (the first book that names one), else its first event's sequence."""
    for _, book in books:
        entries: Any = getattr(book.cover.edition, "divergences", ())
        for entry in entries:
            if entry.domain == domain:
                return int(entry.sequence)
    for _, book in books:
        if book.pages:
            return int(book.pages[0].header.sequence)
    return 0


async def has_edition(ctx: StoreContext, subject: str, edition: str) -> bool:
    """Whether angzarr stored commits of `edition` on the aggregate's `subject`."""
    return any(_timeline(book) == edition for _, book in await _books(ctx, subject))


async def history(
    ctx: StoreContext, subject: str, domain: str, edition: str
) -> tuple[list[RecordedEvent], int] | None:
    """(events, next sequence) of `edition` as angzarr defines it, from the
    books on the aggregate's `subject`; None if it has no commit of `edition`.

    Raises:
        CodecError: the main timeline below the divergence, or the edition
            from it, is not dense (naming the subject, the stream sequence and
            the sequences found).
    """
    books = await _books(ctx, subject)
    own = [stored for stored in books if _timeline(stored[1]) == edition]
    if not own:
        return None
    split = divergence(own, domain)
    events: list[RecordedEvent] = []
    due = _take(events, [s for s in books if not _timeline(s[1])], subject, 0, split)
    if due != split:
        raise CodecError(
            f"edition {edition!r} of {subject} diverges at {split}, but the main timeline "
            f"holds events 0..{due - 1} only",
            subject=subject,
        )
    nxt = _take(events, own, subject, split, None)
    return events, nxt


def _take(
    out: list[RecordedEvent], books: list[Stored], subject: str, due: int, hi: int | None
) -> int:
    """Append the events of `books` below `hi`, checking they run densely
    from `due`; the sequence after the last one taken."""
    for seq, book in books:
        pages = book.pages
        if not pages:
            continue
        first, last = pages[0].header.sequence, pages[len(pages) - 1].header.sequence
        if hi is not None and first >= hi:
            break
        if first != due or last != due + len(pages) - 1:
            raise CodecError(
                f"corrupt EventBook on {subject} at stream sequence {seq}: events "
                f"{first}..{last} where {due}.. was due (not a commit of this timeline)",
                subject=subject,
                stream_sequence=seq,
            )
        out.extend(_codec.recorded(book, 0, hi, subject=subject))
        due = last + 1 if hi is None else min(last + 1, hi)
    return due
