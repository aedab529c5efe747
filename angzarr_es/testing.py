"""Test doubles for users' unit tests: an in-memory store with the same API and semantics."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable

from google.protobuf.message import Message

from angzarr_es import codec
from angzarr_es._types import (
    ANY,
    AppendResult,
    ExpectedVersion,
    History,
    check_expected,
    check_range,
)
from angzarr_es.codec import RecordedEvent
from angzarr_es.errors import ConcurrencyError
from angzarr_es.subjects import AggregateId, encode_root, validate_domain

__all__ = ["InMemoryEventStore"]


class InMemoryEventStore:
    """`EventStore`'s contract in a dict; events go through the same codec."""

    def __init__(self, domain: str) -> None:
        self._domain = validate_domain(domain)
        self._events: dict[str, list[RecordedEvent]] = {}

    @property
    def domain(self) -> str:
        """The domain this store is bound to."""
        return self._domain

    async def append(
        self,
        root: AggregateId,
        events: Iterable[Message],
        *,
        expected: ExpectedVersion,
        correlation_id: str = "",
    ) -> AppendResult:
        """See `EventStore.append`."""
        expected = check_expected(expected)
        if isinstance(events, Message):
            raise TypeError("events must be a list of protobuf messages, not one message")
        packed = [codec.pack(e) for e in events]
        key = encode_root(root)
        history = self._events.setdefault(key, [])
        first = len(history)
        if expected is not ANY and expected != first:
            raise ConcurrencyError(expected, first)
        now = dt.datetime.now(dt.UTC)
        for offset, item in enumerate(packed):
            history.append(
                RecordedEvent(
                    sequence=first + offset,
                    event=codec.unpack(item),
                    type_name=codec.type_name_of(item.type_url),
                    created_at=now,
                    correlation_id=correlation_id,
                )
            )
        if not history:
            del self._events[key]
        return AppendResult(
            first_sequence=first, next_sequence=first + len(packed), stream_sequence=0
        )

    async def load(
        self, root: AggregateId, from_sequence: int = 0, to_sequence: int | None = None
    ) -> History:
        """See `EventStore.load`."""
        lo, hi = check_range(from_sequence, to_sequence)
        history = self._events.get(encode_root(root), [])
        return History(events=history[lo:hi], next_sequence=len(history))

    async def next_sequence(self, root: AggregateId) -> int:
        """See `EventStore.next_sequence`."""
        return len(self._events.get(encode_root(root), []))

    async def iter(
        self, root: AggregateId, from_sequence: int = 0, to_sequence: int | None = None
    ) -> AsyncIterator[RecordedEvent]:
        """See `EventStore.iter`."""
        for event in (await self.load(root, from_sequence, to_sequence)).events:
            yield event
