"""Correlation index: which commits carry a workflow's correlation id.

A commit with a correlation id is written as one atomic batch of two messages
(server >= 2.12, stream `allow_atomic`):

    1. the commit on its aggregate subject, with the usual
       Nats-Expected-Last-Subject-Sequence and Nats-Msg-Id headers;
    2. an index entry on `<prefix>.correlation.<correlation-token>` whose
       payload is the commit's subject.

Either both are stored or neither, so the index never disagrees with the
events, and a batch is stored at consecutive stream sequences: the commit sits
at the entry's sequence minus one. A reader checks that it finds a commit
stamped with the same id there. Commits without a correlation id are published
exactly as before: no second message, no extra header.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable

from angzarr_es import _jsapi as js
from angzarr_es import codec
from angzarr_es._wire import Wire
from angzarr_es.codec import RecordedEvent
from angzarr_es.errors import CodecError, InvalidAggregateId, StoreError
from angzarr_es.subjects import decode_root, encode_root

__all__ = ["ATOMIC_SERVER", "Sender", "by_correlation", "index_subject", "indexed_sender"]

ATOMIC_SERVER = (2, 12, 0)
H_BATCH_ID = "Nats-Batch-Id"
H_BATCH_SEQ = "Nats-Batch-Sequence"
H_BATCH_COMMIT = "Nats-Batch-Commit"
DUPLICATE_IN_BATCH = 10201
# Index entries read per Direct Get batch, and commits fetched concurrently.
INDEX_PAGE = 1000
FETCH_CONCURRENCY = 32

Sender = Callable[[str, bytes, dict[str, str], float], Awaitable[js.PubAck]]


def index_subject(prefix: str, correlation_id: str) -> str:
    """The index subject of one correlation id (hostile ids are encoded like roots).

    Raises:
        InvalidAggregateId: empty or over 1024 bytes.
    """
    return f"{prefix}.correlation.{encode_root(correlation_id)}"


def indexed_sender(wire: Wire, entry_subject: str) -> Sender:
    """A commit publisher that writes the commit and its index entry as one atomic batch.

    Its PubAck names the commit's stream sequence, so the store's retry and
    conflict handling work unchanged.
    """

    async def send(
        subject: str, payload: bytes, headers: dict[str, str], timeout: float
    ) -> js.PubAck:
        batch = secrets.token_hex(16)
        first = {**headers, H_BATCH_ID: batch, H_BATCH_SEQ: "1"}
        await wire.publish(subject, payload, headers=first)
        last = {H_BATCH_ID: batch, H_BATCH_SEQ: "2", H_BATCH_COMMIT: "1"}
        ack = await wire.publish_commit(entry_subject, subject.encode(), last, timeout)
        if ack.error is not None:
            if ack.error.err_code == DUPLICATE_IN_BATCH:
                # An earlier attempt of this commit was stored: let the store's
                # conflict path recognise it as ours.
                return js.PubAck(
                    error=js.ApiError(
                        code=400, err_code=js.WRONG_LAST_SEQUENCE, description="duplicate"
                    )
                )
            return ack
        return js.PubAck(stream=ack.stream, seq=ack.seq - 1, duplicate=ack.duplicate)

    return send


def _parse(prefix: str, subject: str) -> tuple[str, str, str] | None:
    """(domain, root, edition) of a commit subject, or None if it is not one."""
    head = f"{prefix}.events."
    if not subject.startswith(head):
        return None
    parts = subject[len(head) :].split(".")
    if len(parts) not in (2, 3):
        return None
    try:
        root = decode_root(parts[1])
    except InvalidAggregateId:
        return None
    return parts[0], root, parts[2] if len(parts) == 3 else ""


async def _index_sequences(wire: Wire, stream: str, subject: str) -> list[int]:
    seqs: list[int] = []
    start = 1
    while True:
        page = await wire.direct_sequences(stream, subject, start, INDEX_PAGE)
        seqs.extend(page)
        if len(page) < INDEX_PAGE:
            return seqs
        start = page[-1] + 1


async def _commit_at(wire: Wire, stream: str, seq: int) -> tuple[str, bytes] | None:
    msg = await wire.request(
        f"$JS.API.DIRECT.GET.{stream}",
        js.encode(js.MsgGetRequest(seq=seq)),
        what=f"read commit at stream sequence {seq}",
    )
    headers = msg.headers or {}
    status = headers.get("Status")
    if status == "404":
        return None  # purged with its edition
    if status:
        raise StoreError(f"read commit at stream sequence {seq}: status {status}")
    return headers.get("Nats-Subject", ""), msg.data


async def by_correlation(
    wire: Wire, stream: str, prefix: str, correlation_id: str, edition: str
) -> dict[tuple[str, str], list[RecordedEvent]]:
    """Events of every commit stamped `correlation_id` in `edition`, per (domain, root).

    Aggregates appear in the order of their first such commit; events in
    sequence order.

    Raises:
        InvalidAggregateId, CodecError, StoreTimeout, StoreUnavailable, StoreError
    """
    entries = await _index_sequences(wire, stream, index_subject(prefix, correlation_id))
    limit = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def fetch(seq: int) -> tuple[str, bytes] | None:
        async with limit:
            return await _commit_at(wire, stream, seq - 1)

    commits = await asyncio.gather(*(fetch(seq) for seq in entries))
    out: dict[tuple[str, str], list[RecordedEvent]] = {}
    for seq, commit in zip(entries, commits, strict=True):
        if commit is None:
            continue
        subject, payload = commit
        where = _parse(prefix, subject)
        book = codec.decode_book(payload, subject=subject, stream_sequence=seq - 1)
        if where is None or book.cover.correlation_id != correlation_id:
            raise CodecError(
                f"correlation index entry at stream sequence {seq} does not follow a commit "
                f"stamped {correlation_id!r} (found {subject!r})",
                subject=subject,
                stream_sequence=seq - 1,
            )
        domain, root, commit_edition = where
        if commit_edition != edition:
            continue
        out.setdefault((domain, root), []).extend(codec.recorded(book, subject=subject))
    return out
