"""`InMemoryEventStore`: `EventStore`'s contract in a dict; each commit also
goes into the world's stream, for the in-memory bus."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable

import msgspec
from google.protobuf.message import Message

from angzarr_es import _codec
from angzarr_es._codec import RecordedEvent
from angzarr_es._types import (
    ANY,
    AppendResult,
    ExpectedVersion,
    History,
    check_snapshot,
    check_uuid_root,
    prepare_append,
    prepare_read,
)
from angzarr_es.errors import ConcurrencyError, InvalidSnapshot
from angzarr_es.store import _snapshots
from angzarr_es.subjects import (
    AggregateId,
    decode_root,
    encode_root,
    root_bytes,
    validate_domain,
    validate_edition,
)
from angzarr_es.testing._world import Commit, Key, World

__all__ = ["InMemoryEventStore", "sort_key"]


def sort_key(key: Key) -> str:
    """Where an aggregate comes in a listing: the JetStream store lists in
    subject order, root token then edition."""
    return key[2] + (f".{key[1]}" if key[1] else "")


class InMemoryEventStore:
    """`EventStore`'s contract in a dict; events go through the same _codec."""

    def __init__(
        self, domain: str, edition: str | None = None, *, world: World | None = None
    ) -> None:
        self._domain = validate_domain(domain)
        self._edition = validate_edition(edition)
        self._world = world if world is not None else World()

    @property
    def domain(self) -> str:
        """The domain this store is bound to."""
        return self._domain

    @property
    def edition(self) -> str:
        """The edition this store writes and reads ("" for the main timeline)."""
        return self._edition

    def _key(self, root: AggregateId) -> Key:
        token = encode_root(root)
        if self._world.uuid_roots:
            check_uuid_root(root)
        return (self._domain, self._edition, token)

    async def append(
        self,
        root: AggregateId,
        events: Iterable[Message],
        *,
        expected: ExpectedVersion,
        correlation_id: str = "",
        idempotency_key: str = "",
    ) -> AppendResult:
        """See `EventStore.append` (keys are kept for the store's lifetime,
        not for a duplicate window)."""
        args = prepare_append(
            root,
            events,
            expected,
            correlation_id,
            idempotency_key,
            self._key,
            self._world.type_url_prefix,
        )
        key, packed, expected = args.where, args.packed, args.expected
        world = self._world
        world.check_open()
        if idempotency_key and packed:
            earlier = self._world.keyed.get((key, idempotency_key))
            if earlier is not None:
                return earlier
        history = self._world.events.get(key, [])
        first = len(history)
        if expected is not ANY and expected != first:
            raise ConcurrencyError(expected, first)
        if not packed:
            return AppendResult(first_sequence=first, next_sequence=first)
        # Encoded and decoded as the JetStream store does: the bus delivers
        # the same bytes, and events come back exactly as they would.
        subject = world.subjects.aggregate(self._domain, root, self._edition)
        data = _codec.encode_commit(
            domain=self._domain,
            root=root_bytes(root),
            first_sequence=first,
            events=packed,
            correlation_id=correlation_id,
            created_at=world.clock(),
            edition=self._edition,
        )
        # The stream's own time (what `start=<datetime>` reads) is the server's, not the clock's.
        seq = world.record(subject, data, dt.datetime.now(dt.UTC), self._edition)
        book = _codec.decode_book(data, subject=subject, stream_sequence=seq)
        written = _codec.recorded(book, subject=subject)
        world.events[key] = [*history, *written]
        world.commits[key] = world.commits.get(key, 0) + 1
        if correlation_id:
            world.log.append(Commit(correlation_id, key, written))
        result = AppendResult(
            first_sequence=first, next_sequence=first + len(packed), stream_sequence=seq
        )
        if idempotency_key:
            world.keyed[(key, idempotency_key)] = msgspec.structs.replace(result, duplicate=True)
        return result

    async def load(
        self,
        root: AggregateId,
        from_sequence: int = 0,
        to_sequence: int | None = None,
        *,
        snapshot: bool = False,
        as_of: dt.datetime | None = None,
    ) -> History:
        """See `EventStore.load`."""
        key, lo, hi = prepare_read(
            root, from_sequence, to_sequence, self._key, as_of=as_of, snapshot=snapshot
        )
        self._world.check_open()
        history = self._world.events.get(key, [])
        snap = None
        if snapshot:
            saved = self._world.snapshots.get(key)
            if saved and (hi is None or saved[-1].sequence < hi):
                snap = saved[-1]
                lo = max(lo, snap.sequence + 1)
        events = history[lo:hi]
        if as_of is not None:
            for index, event in enumerate(events):
                if event.created_at > as_of:
                    events = events[:index]
                    break
        return History(events=events, next_sequence=len(history), snapshot=snap)

    async def next_sequence(self, root: AggregateId, *, leader: bool = False) -> int:
        """See `EventStore.next_sequence` (one copy: `leader` changes nothing)."""
        key = self._key(root)
        self._world.check_open()
        return len(self._world.events.get(key, []))

    async def iter(
        self, root: AggregateId, from_sequence: int = 0, to_sequence: int | None = None
    ) -> AsyncIterator[RecordedEvent]:
        """See `EventStore.iter`."""
        for event in (await self.load(root, from_sequence, to_sequence)).events:
            yield event

    async def save_snapshot(
        self, root: AggregateId, state: Message, sequence: int, *, retention: int = 0
    ) -> None:
        """See `EventStore.save_snapshot`."""
        sequence = check_snapshot(state, sequence, retention)
        key = self._key(root)
        self._world.check_open()
        nxt = len(self._world.events.get(key, []))
        if sequence >= nxt:
            raise InvalidSnapshot(
                f"aggregate is at next sequence {nxt}; cannot snapshot sequence {sequence}"
            )
        # Stored and read back as the JetStream store stores and reads it.
        world = self._world
        payload = _snapshots.encode(
            state, sequence, retention, world.type_url_prefix, world.clock()
        )
        kept = [*self._world.snapshots.get(key, []), _snapshots.decode(payload, str(key))]
        self._world.snapshots[key] = kept[-(1 + self._world.snapshot_history) :]

    async def list_roots(self) -> AsyncIterator[str]:
        """See `EventStore.list_roots`."""
        self._world.check_open()
        keys = [k for k in self._world.events if k[0] == self._domain and k[1] == self._edition]
        for key in sorted(keys, key=sort_key):
            yield decode_root(key[2])
