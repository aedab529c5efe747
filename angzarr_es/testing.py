"""Test doubles for users' unit tests: an in-memory store with the same API and semantics.

`InMemoryClient` stands in for `Client` (stores per domain and edition,
discovery, correlation, deleting editions); `InMemoryEventStore(domain)` alone
is a store with a private world of its own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import msgspec
from google.protobuf.message import Message

from angzarr_es import _codec
from angzarr_es._codec import RecordedEvent
from angzarr_es._types import (
    ANY,
    AppendResult,
    ExpectedVersion,
    History,
    Snapshot,
    check_snapshot,
    prepare_append,
    prepare_read,
)
from angzarr_es.errors import ConcurrencyError, InvalidEdition, InvalidSnapshot
from angzarr_es.subjects import (
    AggregateId,
    correlation_token,
    decode_root,
    encode_root,
    validate_domain,
    validate_edition,
)

__all__ = ["InMemoryClient", "InMemoryEventStore"]

# (domain, edition, root token)
_Key = tuple[str, str, str]


@dataclass(slots=True)
class _Commit:
    correlation_id: str
    key: _Key
    events: list[RecordedEvent]


@dataclass(slots=True)
class _World:
    """Everything one in-memory "server" holds."""

    snapshot_history: int = 0
    events: dict[_Key, list[RecordedEvent]] = field(default_factory=dict)
    commits: dict[_Key, int] = field(default_factory=dict)
    snapshots: dict[_Key, list[Snapshot]] = field(default_factory=dict)
    log: list[_Commit] = field(default_factory=list)
    keyed: dict[tuple[_Key, str], AppendResult] = field(default_factory=dict)


def _sort_key(key: _Key) -> str:
    # The JetStream store lists in subject order: root token, then edition.
    return key[2] + (f".{key[1]}" if key[1] else "")


class InMemoryEventStore:
    """`EventStore`'s contract in a dict; events go through the same _codec."""

    def __init__(
        self, domain: str, edition: str | None = None, *, world: _World | None = None
    ) -> None:
        self._domain = validate_domain(domain)
        self._edition = validate_edition(edition)
        self._world = world if world is not None else _World()

    @property
    def domain(self) -> str:
        """The domain this store is bound to."""
        return self._domain

    @property
    def edition(self) -> str:
        """The edition this store writes and reads ("" for the main timeline)."""
        return self._edition

    def _key(self, root: AggregateId) -> _Key:
        return (self._domain, self._edition, encode_root(root))

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
        args = prepare_append(root, events, expected, correlation_id, idempotency_key, self._key)
        key, packed, expected = args.where, args.packed, args.expected
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
        now = dt.datetime.now(dt.UTC)
        written = [
            RecordedEvent(
                sequence=first + offset,
                event=_codec.unpack(item),
                type_name=_codec.type_name_of(item.type_url),
                created_at=now,
                correlation_id=correlation_id,
            )
            for offset, item in enumerate(packed)
        ]
        self._world.events[key] = [*history, *written]
        self._world.commits[key] = self._world.commits.get(key, 0) + 1
        if correlation_id:
            self._world.log.append(_Commit(correlation_id, key, written))
        result = AppendResult(
            first_sequence=first, next_sequence=first + len(packed), stream_sequence=0
        )
        if idempotency_key:
            self._world.keyed[(key, idempotency_key)] = msgspec.structs.replace(
                result, duplicate=True
            )
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

    async def next_sequence(self, root: AggregateId) -> int:
        """See `EventStore.next_sequence`."""
        return len(self._world.events.get(self._key(root), []))

    async def iter(
        self, root: AggregateId, from_sequence: int = 0, to_sequence: int | None = None
    ) -> AsyncIterator[RecordedEvent]:
        """See `EventStore.iter`."""
        for event in (await self.load(root, from_sequence, to_sequence)).events:
            yield event

    async def save_snapshot(self, root: AggregateId, state: Message, sequence: int) -> None:
        """See `EventStore.save_snapshot`."""
        sequence = check_snapshot(state, sequence)
        key = self._key(root)
        nxt = len(self._world.events.get(key, []))
        if sequence >= nxt:
            raise InvalidSnapshot(
                f"aggregate is at next sequence {nxt}; cannot snapshot sequence {sequence}"
            )
        copy = _codec.unpack(_codec.pack(state))
        kept = [*self._world.snapshots.get(key, []), Snapshot(sequence=sequence, state=copy)]
        self._world.snapshots[key] = kept[-(1 + self._world.snapshot_history) :]

    async def list_roots(self) -> AsyncIterator[str]:
        """See `EventStore.list_roots`."""
        keys = [k for k in self._world.events if k[0] == self._domain and k[1] == self._edition]
        for key in sorted(keys, key=_sort_key):
            yield decode_root(key[2])


class InMemoryClient:
    """`Client`'s store operations over one in-memory world."""

    def __init__(self, *, snapshot_history: int = 0) -> None:
        self._world = _World(snapshot_history=snapshot_history)

    def store(self, domain: str, edition: str | None = None) -> InMemoryEventStore:
        """See `Client.store`."""
        return InMemoryEventStore(domain, edition, world=self._world)

    async def list_domains(self) -> AsyncIterator[str]:
        """See `Client.list_domains`."""
        for domain in sorted({k[0] for k in self._world.events if not k[1]}):
            yield domain

    async def events_by_correlation(
        self, correlation_id: str, *, edition: str | None = None
    ) -> dict[tuple[str, str], list[RecordedEvent]]:
        """See `Client.events_by_correlation`."""
        correlation_token(correlation_id)
        wanted = validate_edition(edition)
        out: dict[tuple[str, str], list[RecordedEvent]] = {}
        for commit in self._world.log:
            domain, commit_edition, token = commit.key
            if commit.correlation_id != correlation_id or commit_edition != wanted:
                continue
            if commit.key not in self._world.events:
                continue  # deleted with its edition
            out.setdefault((domain, decode_root(token)), []).extend(commit.events)
        return out

    async def delete_edition(self, edition: str) -> int:
        """See `Client.delete_edition`."""
        name = validate_edition(edition)
        if not name:
            raise InvalidEdition("the main timeline cannot be deleted")
        doomed = [k for k in self._world.events if k[1] == name]
        purged = 0
        for key in doomed:
            del self._world.events[key]
            purged += self._world.commits.pop(key, 0)
            self._world.snapshots.pop(key, None)
        self._world.log = [c for c in self._world.log if c.key[1] != name]
        self._world.keyed = {k: v for k, v in self._world.keyed.items() if k[0][1] != name}
        return purged
