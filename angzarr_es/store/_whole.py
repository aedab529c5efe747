"""Reading a whole subject at once, for the rare paths that need every
message of an aggregate's subject decoded as books: the position when the
subject's last message is another edition's (`_context`), angzarr's editions
(`_shared`), and the commit holding a snapshot's event on such a subject
(`_snapshots`)."""

from __future__ import annotations

from angzarr_es import _codec
from angzarr_es._nats import Wire
from angzarr_es.pb import core_pb2

__all__ = ["Stored", "subject_books"]

PAGE = 1000
PAGE_BYTES = 2 * 1024 * 1024

Stored = tuple[int, core_pb2.EventBook]


async def subject_books(wire: Wire, stream: str, subject: str, until: int = 0) -> list[Stored]:
    """(stream sequence, book) of every message on `subject` (Direct Get
    pages), at least up to stream sequence `until` (what a lagging replica
    did not serve is read from the leader).

    Raises:
        CodecError: a message is not an EventBook.
        StoreTimeout, StoreUnavailable, StoreError
    """
    reads = wire.reads
    out: list[Stored] = []
    start = 1
    while True:
        payloads, end, more = await reads.direct_batch(stream, subject, start, PAGE, PAGE_BYTES)
        if not payloads:
            break
        seqs = await reads.direct_sequences(stream, subject, start, len(payloads))
        for seq, payload in zip(seqs, payloads, strict=False):
            out.append((seq, _codec.decode_book(payload, subject=subject, stream_sequence=seq)))
        start = end + 1
        if not more:
            break
    while start <= until:
        got = await reads.leader_next(stream, subject, start)
        if got is None:
            break
        payload, seq = got
        out.append((seq, _codec.decode_book(payload, subject=subject, stream_sequence=seq)))
        start = seq + 1
    return out
