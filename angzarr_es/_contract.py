"""The store contract as types: what every store and every client that hands
out stores provides (`EventStore` and `Client`, `testing.InMemoryEventStore`
and `testing.InMemoryClient`), and the client's lifecycle and bus
(`ClientProtocol`: `Client` and `InMemoryClient`).

mypy checks each implementation against these at the bottom of this module,
so the in-memory double cannot drift from the JetStream store's signatures;
`tests/integration/test_contract.py` checks that they behave alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, overload

from google.protobuf.message import Message

from angzarr_es._codec import RecordedEvent
from angzarr_es._types import AppendResult, ExpectedVersion, History
from angzarr_es.config import Config
from angzarr_es.filters import FilterLike
from angzarr_es.subjects import AggregateId

if TYPE_CHECKING:  # the layers above: named in annotations only
    from angzarr_es._provision import ProvisionPlan
    from angzarr_es.bus import (
        Delivery,
        Handler,
        ProjectorSettings,
        ProjectorStats,
        SkipHandler,
        Start,
        Subscription,
    )

__all__ = [
    "BusProtocol",
    "CatchUpProtocol",
    "ClientProtocol",
    "ProjectorProtocol",
    "StoreProtocol",
    "StoresProtocol",
]


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

    async def next_sequence(self, root: AggregateId, *, leader: bool = False) -> int: ...

    def iter(
        self, root: AggregateId, from_sequence: int = 0, to_sequence: int | None = None
    ) -> AsyncIterator[RecordedEvent]: ...

    async def save_snapshot(
        self, root: AggregateId, state: Message, sequence: int, *, retention: int = 0
    ) -> None: ...

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


class ProjectorProtocol(Protocol):
    """A durable projector (`Projector`, `testing.InMemoryProjector`)."""

    @property
    def name(self) -> str: ...

    @property
    def settings(self) -> ProjectorSettings: ...

    @property
    def stats(self) -> ProjectorStats: ...

    @property
    def running(self) -> bool: ...

    async def wait(
        self, predicate: Callable[[ProjectorStats], bool], timeout: float | None = None
    ) -> ProjectorStats: ...

    async def start(self) -> None: ...

    async def stop(self, *, drain_timeout: float | None = 30.0) -> None: ...

    async def reset(self, start: Start = "all") -> None: ...

    async def checkpoint(self) -> int: ...

    async def delete(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class CatchUpProtocol(Protocol):
    """A catch-up subscription (`CatchUp`, `testing.InMemoryCatchUp`)."""

    @property
    def subject(self) -> str: ...

    async def open(self) -> None: ...

    def __aiter__(self) -> Self: ...

    async def __anext__(self) -> Delivery: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BusProtocol(Protocol):
    """Live subscriptions (`Bus`, `testing.InMemoryBus`)."""

    @property
    def jetstream(self) -> bool: ...

    def subject(self, domain: str, root: AggregateId) -> str: ...

    def filter(self, f: FilterLike) -> str: ...

    async def subscribe(
        self,
        f: FilterLike,
        handler: Handler,
        *,
        start: Start = "new",
        on_skip: SkipHandler | None = None,
    ) -> Subscription: ...

    async def provision(self) -> None: ...


class ClientProtocol(StoresProtocol, Protocol):
    """A client as an application uses it: stores, its lifecycle, provisioning
    and the bus."""

    @property
    def config(self) -> Config: ...

    @property
    def closed(self) -> bool: ...

    @property
    def bus(self) -> BusProtocol: ...

    async def has_events(self, domain: str) -> bool: ...

    @overload
    def projector(
        self,
        name: str,
        handler: Handler,
        /,
        *,
        concurrency: int = 1,
        max_deliver: int | None = None,
        ack_wait: float | None = None,
        backoff: Sequence[float] | None = None,
        max_ack_pending: int | None = None,
        start: Start = "all",
        partition: tuple[int, int] | None = None,
    ) -> ProjectorProtocol: ...

    @overload
    def projector(
        self,
        name: str,
        filter: FilterLike,
        handler: Handler,
        *,
        concurrency: int = 1,
        max_deliver: int | None = None,
        ack_wait: float | None = None,
        backoff: Sequence[float] | None = None,
        max_ack_pending: int | None = None,
        start: Start = "all",
        partition: tuple[int, int] | None = None,
    ) -> ProjectorProtocol: ...

    def subscribe(
        self, filter: FilterLike, *, start: Start = "all", on_skip: SkipHandler | None = None
    ) -> CatchUpProtocol: ...

    async def plan_provision(
        self, *, bus: bool = False, domains: Sequence[str] = ()
    ) -> ProvisionPlan: ...

    async def provision(self, *, domains: Sequence[str] = ()) -> ProvisionPlan: ...

    async def close(self, *, drain_timeout: float | None = 30.0) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


if TYPE_CHECKING:
    from angzarr_es.client import Client
    from angzarr_es.store import EventStore
    from angzarr_es.testing import InMemoryClient, InMemoryEventStore

    # Conformance, checked by mypy only: a signature that drifts fails here.
    _stores: tuple[type[StoreProtocol], ...] = (EventStore, InMemoryEventStore)
    _clients: tuple[type[ClientProtocol], ...] = (Client, InMemoryClient)
