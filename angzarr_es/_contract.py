"""The store contract as types: what every store and every client that hands
out stores provides (`EventStore` and `Client`, `testing.InMemoryEventStore`
and `testing.InMemoryClient`).

mypy checks each implementation against these at the bottom of this module,
so the in-memory double cannot drift from the JetStream store's signatures;
`tests/integration/test_contract.py` checks that they behave alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Protocol

from google.protobuf.message import Message

from angzarr_es._codec import RecordedEvent
from angzarr_es._types import AppendResult, ExpectedVersion, History
from angzarr_es.subjects import AggregateId

__all__ = ["StoreProtocol", "StoresProtocol"]


class StoreProtocol(Protocol):
    """The aggregates of one domain, on one timeline."""

    @property
    def domain(self) -> str: ...

    @property
    def edition(self) -> str: ...

    async def append(
        self,
        root: AggregateId,
        events: Iterable[Message],
        *,
        expected: ExpectedVersion,
        correlation_id: str = "",
        idempotency_key: str = "",
    ) -> AppendResult: ...

    async def load(
        self,
        root: AggregateId,
        from_sequence: int = 0,
        to_sequence: int | None = None,
        *,
        snapshot: bool = False,
        as_of: dt.datetime | None = None,
    ) -> History: ...

    async def next_sequence(self, root: AggregateId) -> int: ...

    def iter(
        self, root: AggregateId, from_sequence: int = 0, to_sequence: int | None = None
    ) -> AsyncIterator[RecordedEvent]: ...

    async def save_snapshot(self, root: AggregateId, state: Message, sequence: int) -> None: ...

    def list_roots(self) -> AsyncIterator[str]: ...


class StoresProtocol(Protocol):
    """A client's store operations: stores per domain and edition, and what
    spans domains."""

    def store(self, domain: str, edition: str | None = None) -> StoreProtocol: ...

    def list_domains(self) -> AsyncIterator[str]: ...

    async def events_by_correlation(
        self, correlation_id: str, *, edition: str | None = None
    ) -> dict[tuple[str, str], list[RecordedEvent]]: ...

    async def delete_edition(self, edition: str) -> int: ...


if TYPE_CHECKING:
    from angzarr_es.client import Client
    from angzarr_es.store import EventStore
    from angzarr_es.testing import InMemoryClient, InMemoryEventStore

    # Conformance, checked by mypy only: a signature that drifts fails here.
    _stores: tuple[type[StoreProtocol], ...] = (EventStore, InMemoryEventStore)
    _clients: tuple[type[StoresProtocol], ...] = (Client, InMemoryClient)
