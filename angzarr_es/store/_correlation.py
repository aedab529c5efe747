"""Correlation index: which commits carry a workflow's correlation id.

The index is a list of hints; the answer is derived from the events. Before a
commit stamped with a correlation id is published, an entry is stored on
`<prefix>.correlation.<correlation-token>` (in the event stream) naming the
commit's subject and first sequence. Then the commit is published as usual.

A reader takes each entry and reads, from the stream leader, the first commit
on that subject after the entry. Because the commit was published with the
aggregate's expected last sequence, it landed only if no other commit came
between the entry and it, so the commit that follows the entry *is* the
entry's commit when it landed at all. The reader keeps it only if it carries
the id and starts at the entry's sequence. Hence:

- a commit that landed always has its entry (the entry is acknowledged first);
- an entry whose commit was refused, or never sent (crash, conflict), or
  purged with its edition, yields nothing;
- so the index never disagrees with the events.

In per-domain layout (angzarr's, one stream per domain) the index has a
stream of its own (`_streams.py`), whose sequences say nothing about a
domain stream's, so an entry also carries `after`: the stream sequence of the
aggregate's last commit when the entry was written (what the commit's
expected-last-sequence header says). The commit that follows it on the
subject in the domain stream is the entry's commit when it landed at all,
and is read and checked the same way: one leader read per entry, as before.

Commits someone else stored (angzarr's bus stamps the correlation id in the
cover and an `Angzarr-Correlation` header, and writes no entry) are indexed
afterwards by `index_commit`, run by a durable projector (`angzarr-es
index-correlation`): its entry names the commit's stream sequence
(`commit_seq`, in the commit's own stream), and the reader reads that very
message and keeps it on the same checks. Such entries are idempotent
(`Nats-Msg-Id` from the commit's stream and sequence within the duplicate
window; the reader de-duplicates by stream sequence beyond it), and they
appear as soon as the projector has handled the commit: until then (the
indexer behind or not running) the commit is missing from the answer.

Measured alternative (docs/operations.md): writing the commit and the entry as
one atomic batch (server >= 2.12) costs about 3 ms per commit on a one-replica
file stream, because the server stages every batch in a temporary file store;
the entry-first write costs one extra round trip (~0.1-0.3 ms). Commits
without a correlation id are published exactly as before: no entry, no header.
"""

from __future__ import annotations

import asyncio
import re
import secrets

import msgspec

from angzarr_es import _codec, _provision
from angzarr_es._codec import RecordedEvent
from angzarr_es._nats import Wire
from angzarr_es._nats.errors import STREAM_NAME_IN_USE
from angzarr_es._nats.messages import H_CORRELATION, H_MSG_ID
from angzarr_es._streams import Streams
from angzarr_es.errors import InvalidAggregateId, StoreError
from angzarr_es.pb import core_pb2
from angzarr_es.store._cache import Position
from angzarr_es.store._context import StoreContext
from angzarr_es.subjects import Subjects

__all__ = ["by_correlation", "index", "index_commit", "index_subject", "write_entry"]

# Index entries read per Direct Get batch, and commits fetched concurrently.
INDEX_PAGE = 1000
INDEX_BYTES = 1024 * 1024
FETCH_CONCURRENCY = 32


# The Nats-Msg-Id of this store's commits (made in `_append`): random (`<24 hex>-<sequence>`) or
# an idempotency key's (`key-<32 hex>`, `.<stream seq>` per derivation).
_OURS = re.compile(r"[0-9a-f]{24}-[0-9]+|key-[0-9a-f]{32}(\.[0-9]+)*")


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """One index entry: the commit's subject and its first sequence."""

    subject: str
    first_sequence: int
    after: int = -1
    """Per-domain layout: the stream sequence of the aggregate's last commit
    before this one, in its domain stream (-1: the entry is in the commit's
    own stream, before it; the single layout's entries end there)."""
    commit_seq: int = 0
    """An entry written after its commit (`index_commit`): the commit's
    stream sequence in its own stream (0: the entry came first)."""


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Entry).decode


def index_subject(prefix: str, correlation_id: str) -> str:
    """The index subject of one correlation id (hostile ids are encoded like roots).

    Raises:
        TypeError: not a str.
        InvalidAggregateId: empty or over 1024 bytes.
    """
    return Subjects(prefix).correlation(correlation_id)


async def write_entry(
    wire: Wire,
    stream: str,
    entry_subject: str,
    subject: str,
    first_sequence: int,
    after: int = -1,
    commit_seq: int = 0,
) -> None:
    """Store the index entry for a commit about to be published (`after`:
    per-domain layout, the stream sequence it is expected to follow), or with
    `commit_seq` for the commit stored at that stream sequence.

    Raises:
        StoreTimeout, StoreUnavailable, StoreError: it was not stored; the
            commit must not be published.
    """
    if commit_seq:
        payload = _encode(Entry(subject, first_sequence, after, commit_seq))
        msg_id = f"ixc-{subject}-{commit_seq}"  # the same for every repeat
    else:
        if after < 0:
            payload = _encode((subject, first_sequence))  # as written before layouts
        else:
            payload = _encode(Entry(subject, first_sequence, after))
        msg_id = f"ix-{secrets.token_hex(12)}"
    headers = {H_MSG_ID: msg_id}
    attempts = wire.cfg.append_attempts
    for attempt in range(1, attempts + 1):
        try:
            ack = await wire.publish_commit(stream, entry_subject, payload, headers, wire.timeout)
        except TimeoutError:
            if attempt == attempts:
                raise
            continue  # same Nats-Msg-Id: a stored first attempt is deduplicated
        if ack.error is not None:
            raise ack.error.as_error(f"index {subject} under {entry_subject}")
        return


async def index(ctx: StoreContext, entry_subject: str, subject: str, pos: Position) -> None:
    """Store the index entry for a commit about to be published at `pos`, in
    the layout's index stream (made on first use in per-domain layout).

    Raises:
        StoreTimeout, StoreUnavailable, StoreError: it was not stored.
    """
    streams = ctx.streams
    if not streams.per_domain:
        await write_entry(ctx.wire, streams.single, entry_subject, subject, pos.next_sequence)
        return
    if not ctx.index_ready:
        await _ensure_index(ctx)
    await write_entry(
        ctx.wire, streams.correlation, entry_subject, subject, pos.next_sequence, pos.stream_seq
    )


async def index_commit(
    ctx: StoreContext,
    subject: str,
    stream_seq: int,
    book: core_pb2.EventBook,
    headers: dict[str, str],
) -> bool:
    """Index a stored commit that has no entry: one stamped with a correlation
    id (its `Angzarr-Correlation` header, else its cover) and not written by
    this store (whose commits carry their entries). True if an entry was written.

    Raises:
        StoreTimeout, StoreUnavailable, StoreError: the entry was not stored.
    """
    cid = headers.get(H_CORRELATION) or book.cover.correlation_id
    if not cid or not book.pages or _OURS.fullmatch(headers.get(H_MSG_ID, "")):
        return False
    try:
        entry_subject = index_subject(ctx.streams.subjects.prefix, cid)
    except (TypeError, InvalidAggregateId):
        return False  # an id no entry subject can hold: nothing to index it by
    first = book.pages[0].header.sequence
    streams = ctx.streams
    if streams.per_domain and not ctx.index_ready:
        await _ensure_index(ctx)
    index_stream = streams.correlation if streams.per_domain else streams.single
    await write_entry(ctx.wire, index_stream, entry_subject, subject, first, commit_seq=stream_seq)
    return True


async def _ensure_index(ctx: StoreContext) -> None:
    """Per-domain layout: create the index's stream on its first use.

    Raises:
        StoreError: the server refused.
    """
    config = _provision.correlation_stream_config(ctx.cfg)
    if await ctx.wire.js.stream_info(config.name, what="correlation stream") is None:
        try:
            await ctx.wire.js.stream_put(config, create=True, what=f"stream {config.name}")
        except StoreError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
    ctx.index_ready = True


def _parse(prefix: str, subject: str) -> tuple[str, str, str] | None:
    """(domain, root, edition) of a commit subject, or None if it is not one."""
    try:
        return Subjects(prefix).parse(subject)
    except InvalidAggregateId:
        return None


async def _entries(wire: Wire, stream: str, subject: str) -> list[tuple[int, Entry]]:
    """(stream sequence, entry) of every index entry on `subject`."""
    out: list[tuple[int, Entry]] = []
    start = 1
    while True:
        seqs = await wire.reads.direct_sequences(stream, subject, start, INDEX_PAGE)
        if not seqs:
            return out
        payloads, _, _ = await wire.reads.direct_batch(
            stream, subject, start, len(seqs), INDEX_BYTES
        )
        count = min(len(seqs), len(payloads))
        if not count:
            return out
        for seq, payload in zip(seqs[:count], payloads[:count], strict=True):
            try:
                out.append((seq, _decode(payload)))
            except msgspec.DecodeError:
                continue  # not an entry this version wrote: no commit to find
        if count == len(seqs) < INDEX_PAGE:
            return out
        start = seqs[count - 1] + 1


async def by_correlation(
    wire: Wire, streams: Streams, correlation_id: str, edition: str
) -> dict[tuple[str, str], list[RecordedEvent]]:
    """Events of every commit stamped `correlation_id` in `edition`, per (domain, root).

    Aggregates appear in the order of their first such commit (per-domain
    layout: of its index entry); events in sequence order.

    Raises:
        InvalidAggregateId, CodecError, StoreTimeout, StoreUnavailable, StoreError
    """
    prefix = streams.subjects.prefix
    index = streams.correlation
    if streams.per_domain and await wire.js.stream_info(index, what="correlation stream") is None:
        return {}
    entries = await _entries(wire, index, index_subject(prefix, correlation_id))
    limit = asyncio.Semaphore(FETCH_CONCURRENCY)
    # An entry on an edition's own subject names its edition; one indexed
    # afterwards on an aggregate's subject may be for any edition angzarr put
    # there (the commit's cover tells, below).
    wanted = [
        (seq, entry, where)
        for seq, entry in entries
        if (where := _parse(prefix, entry.subject)) is not None
        and (where[2] == edition or (entry.commit_seq and not where[2]))
    ]

    async def fetch(seq: int, entry: Entry) -> tuple[bytes, int] | None:
        if entry.commit_seq:  # indexed afterwards: the commit itself
            stream, start = streams.of_subject(entry.subject), entry.commit_seq
        elif entry.after >= 0:  # per-domain: after the aggregate's last commit then
            stream, start = streams.of_subject(entry.subject), entry.after + 1
        else:
            stream, start = index, seq + 1
        async with limit:
            # The leader: a lagging replica could miss a landed commit.
            got = await wire.reads.leader_next(stream, entry.subject, start)
        if entry.commit_seq and (got is None or got[1] != entry.commit_seq):
            return None  # the indexed commit is gone (purged)
        return got

    commits = await asyncio.gather(*(fetch(seq, entry) for seq, entry, _ in wanted))
    # (stream, commit's sequence) -> (order, (domain, root), events)
    found: dict[tuple[str, int], tuple[int, tuple[str, str], list[RecordedEvent]]] = {}
    for (seq, entry, where), commit in zip(wanted, commits, strict=True):
        if commit is None:
            continue
        payload, commit_seq = commit
        at = (streams.of_subject(entry.subject), commit_seq)
        if at in found:
            continue
        book = _codec.decode_book(payload, subject=entry.subject, stream_sequence=commit_seq)
        stamped = book.cover.correlation_id
        # A commit indexed afterwards may carry the id in its header only.
        if stamped != correlation_id and (stamped or not entry.commit_seq):
            continue
        if not book.pages or book.pages[0].header.sequence != entry.first_sequence:
            continue
        # angzarr puts every edition on the aggregate's subject: its cover tells.
        timeline = book.cover.edition.name if _codec.elsewhere(book, entry.subject) else where[2]
        if timeline != edition:
            continue
        events = _codec.recorded(book, subject=entry.subject)
        if not stamped:
            events = [msgspec.structs.replace(e, correlation_id=correlation_id) for e in events]
        order = seq if streams.per_domain else commit_seq
        found[at] = (order, (where[0], where[1]), events)
    out: dict[tuple[str, str], list[RecordedEvent]] = {}
    for _, key, events in sorted(found.values(), key=lambda f: f[0]):
        out.setdefault(key, []).extend(events)
    return out
