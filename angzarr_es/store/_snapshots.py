"""Snapshots: an aggregate's state after one of its events, in a stream of their own.

    stream   <stream_name minus "-events">-snapshots (default angzarr-snapshots)
    subject  <prefix>.snapshots.<domain>.<root-token>[.<edition>]
    payload  core.Snapshot {sequence, state: Any, retention, created_at}
    header   Angzarr-Commit-Sequence: stream sequence of the event commit holding `sequence`

Snapshots live in a stream of their own, so that its per-subject limit never
touches events: `max_msgs_per_subject` keeps the latest snapshot per
aggregate plus `snapshot_history` older ones. The header lets a load start its
Direct Get batch at the covering commit instead of the aggregate's first.
"""

from __future__ import annotations

import datetime as dt

from google.protobuf.message import DecodeError, Message

from angzarr_es import _codec
from angzarr_es._nats import Wire
from angzarr_es._types import Snapshot
from angzarr_es.errors import CodecError, InvalidSnapshot
from angzarr_es.pb import core_pb2
from angzarr_es.store._whole import subject_books

__all__ = ["covering_commit", "decode", "encode", "latest", "save"]

H_COMMIT_SEQ = "Angzarr-Commit-Sequence"


def _elsewhere(payload: bytes, subject: str, seq: int) -> bool:
    """Whether a message is another edition's commit (angzarr's bus)."""
    return _codec.elsewhere(
        _codec.decode_book(payload, subject=subject, stream_sequence=seq), subject
    )


async def _covering_among_editions(
    wire: Wire, stream: str, subject: str, sequence: int, until: int
) -> int:
    """`covering_commit` on a subject that also holds other editions' commits
    (angzarr's bus puts every edition on the aggregate's subject), whose
    sequences break the binary search: the subject is read whole.

    Raises:
        InvalidSnapshot: the timeline has no event `sequence`.
    """
    for seq, book in await subject_books(wire, stream, subject, until):
        if _codec.elsewhere(book, subject):
            continue
        first, nxt = _codec.commit_span(book, subject=subject, stream_sequence=seq)
        if first <= sequence < nxt:
            return seq
    raise InvalidSnapshot(f"{subject} has no event {sequence}; cannot snapshot it")


def _first_and_next(payload: bytes, subject: str, seq: int) -> tuple[int, int]:
    book = _codec.decode_book(payload, subject=subject, stream_sequence=seq)
    return _codec.commit_span(book, subject=subject, stream_sequence=seq)


async def covering_commit(wire: Wire, stream: str, subject: str, sequence: int) -> int:
    """Stream sequence of the commit on `subject` holding event `sequence`.

    The last commit usually holds it (a snapshot is taken right after a load);
    otherwise a binary search over the stream with leader reads finds it in
    O(log stream length) requests.

    Raises:
        InvalidSnapshot: the aggregate has no event `sequence` yet.
        CodecError, StoreTimeout, StoreUnavailable
    """
    tail = await wire.reads.direct_last(stream, subject)
    last = None if tail is None else tail[:2]
    if last is None or _first_and_next(last[0], subject, last[1])[1] <= sequence:
        # A lagging replica may not have the commit yet: ask the leader.
        last = await wire.reads.leader_last(stream, subject)
    if last is None:
        raise InvalidSnapshot(f"{subject} has no events; cannot snapshot sequence {sequence}")
    if _elsewhere(last[0], subject, last[1]):
        return await _covering_among_editions(wire, stream, subject, sequence, last[1])
    first, nxt = _first_and_next(last[0], subject, last[1])
    if sequence >= nxt:
        raise InvalidSnapshot(
            f"{subject} is at next sequence {nxt}; cannot snapshot sequence {sequence}"
        )
    if first <= sequence:
        return last[1]
    lo, hi, found = 1, last[1] - 1, 1
    while lo <= hi:
        mid = (lo + hi) // 2
        hit = await wire.reads.leader_next(stream, subject, mid)
        if hit is None or hit[1] > hi:
            hi = mid - 1
            continue
        if _elsewhere(hit[0], subject, hit[1]):
            return await _covering_among_editions(wire, stream, subject, sequence, last[1])
        start, _ = _first_and_next(hit[0], subject, hit[1])
        if start <= sequence:
            found = hit[1]
            lo = hit[1] + 1
        else:
            hi = mid - 1
    return found


def encode(
    state: Message,
    sequence: int,
    retention: int,
    type_url_prefix: str,
    created_at: dt.datetime,
) -> bytes:
    """One snapshot as stored, stamped with `created_at`.

    Raises:
        TypeError: `state` is not a protobuf message.
    """
    name = core_pb2.SnapshotRetention.Name(retention)
    snap = core_pb2.Snapshot(sequence=sequence, retention=name)
    snap.state.CopyFrom(_codec.pack(state, type_url_prefix))
    snap.created_at.FromDatetime(created_at)
    return snap.SerializeToString()


def decode(data: bytes, subject: str) -> Snapshot:
    """A stored snapshot as the record `load` returns.

    Raises:
        CodecError: naming the subject.
    """
    try:
        snap = core_pb2.Snapshot.FromString(data)
        created_at = (
            snap.created_at.ToDatetime(tzinfo=dt.UTC) if snap.HasField("created_at") else None
        )
    except (DecodeError, OverflowError, ValueError) as exc:
        raise CodecError(f"corrupt snapshot on {subject}: {exc}", subject=subject) from exc
    return Snapshot(
        sequence=snap.sequence,
        state=_codec.unpack(snap.state),
        retention=snap.retention,
        created_at=created_at,
    )


async def save(wire: Wire, stream: str, subject: str, payload: bytes, commit_seq: int) -> None:
    """Store one snapshot (`encode`'s bytes).

    Raises:
        StoreTimeout, StoreUnavailable, StoreError
    """
    headers = {H_COMMIT_SEQ: str(commit_seq)}
    ack = await wire.publish_commit(stream, subject, payload, headers, wire.timeout)
    if ack.error is not None:
        raise ack.error.as_error(f"save snapshot to {subject}")


async def latest(wire: Wire, stream: str, subject: str) -> tuple[Snapshot, int] | None:
    """The latest snapshot on `subject` and its covering commit's stream sequence.

    Raises:
        CodecError, StoreTimeout, StoreUnavailable, StoreError
    """
    found = await wire.reads.direct_last(stream, subject, f"read snapshot {subject}")
    if found is None:
        return None
    data, _, headers = found
    record = decode(data, subject)
    raw_seq = headers.get(H_COMMIT_SEQ, "1") or "1"
    if not raw_seq.isdigit():
        raise CodecError(
            f"corrupt snapshot on {subject}: {H_COMMIT_SEQ} is {raw_seq!r}, not a stream sequence",
            subject=subject,
        )
    commit_seq = int(raw_seq)
    return record, commit_seq
