"""The store contract: every implementation (in-memory, JetStream with each
replay strategy) must pass these, with the same results."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any, Protocol

import msgspec
import pytest

import angzarr_es
from angzarr_es import ANY, AppendResult, ConcurrencyError, History
from angzarr_es.codec import RecordedEvent
from angzarr_es.config import Config
from angzarr_es.pb import hand_pb2, player_pb2
from angzarr_es.testing import InMemoryEventStore
from tests.conftest import delete_stream


class Store(Protocol):
    @property
    def domain(self) -> str: ...

    async def append(
        self, root: Any, events: Any, *, expected: Any, correlation_id: str = ""
    ) -> AppendResult: ...

    async def load(
        self, root: Any, from_sequence: int = 0, to_sequence: int | None = None
    ) -> History: ...

    async def next_sequence(self, root: Any) -> int: ...

    def iter(
        self, root: Any, from_sequence: int = 0, to_sequence: int | None = None
    ) -> AsyncIterator[RecordedEvent]: ...


StoreFactory = Any


@pytest.fixture(params=["memory", "direct", "consumer"])
async def stores(request: pytest.FixtureRequest, config: Config) -> AsyncIterator[StoreFactory]:
    """A factory domain -> store for one implementation."""
    if request.param == "memory":
        made: dict[str, InMemoryEventStore] = {}

        def memory(domain: str) -> InMemoryEventStore:
            return made.setdefault(domain, InMemoryEventStore(domain))

        yield memory
        return
    nats = msgspec.structs.replace(config.nats, replay=request.param)
    cfg = Config(bus=msgspec.structs.replace(config.bus, nats=nats))
    async with await angzarr_es.connect(config=cfg) as client:
        await client.provision()
        yield client.store
        await delete_stream(client, nats.stream_name)


@pytest.fixture
def store(stores: StoreFactory) -> Store:
    s: Store = stores("player")
    return s


def deposit(cents: int) -> player_pb2.FundsDeposited:
    return player_pb2.FundsDeposited(amount_cents=cents, currency="EUR")


async def test_new_aggregate_is_empty(store: Store) -> None:
    pid = uuid.uuid4()
    hist = await store.load(pid)
    assert hist.events == []
    assert hist.next_sequence == 0
    assert await store.next_sequence(pid) == 0


async def test_sequences_start_at_zero_and_stay_dense(store: Store) -> None:
    pid = uuid.uuid4()
    r1 = await store.append(pid, [player_pb2.PlayerRegistered(name="Ann")], expected=0)
    r2 = await store.append(pid, [deposit(1), deposit(2), deposit(3)], expected=1)
    r3 = await store.append(pid, [deposit(4)], expected=4)
    assert (r1.first_sequence, r1.next_sequence) == (0, 1)
    assert (r2.first_sequence, r2.next_sequence) == (1, 4)
    assert (r3.first_sequence, r3.next_sequence) == (4, 5)
    hist = await store.load(pid)
    assert [e.sequence for e in hist.events] == [0, 1, 2, 3, 4]
    assert hist.next_sequence == 5
    assert await store.next_sequence(pid) == 5


async def test_events_round_trip_exactly(store: Store) -> None:
    pid = uuid.uuid4()
    before = dt.datetime.now(dt.UTC)
    events = [
        player_pb2.PlayerRegistered(name="Zoë ♠", email="z@example.org"),
        deposit(1_000_000_000_000),
        player_pb2.FundsWithdrawn(amount_cents=-5, currency="", reason="x" * 1000),
    ]
    await store.append(pid, events, expected=0, correlation_id="wf-123")
    after = dt.datetime.now(dt.UTC)
    hist = await store.load(pid)
    assert [e.event for e in hist.events] == events
    assert [e.type_name for e in hist.events] == [
        "examples.player.PlayerRegistered",
        "examples.player.FundsDeposited",
        "examples.player.FundsWithdrawn",
    ]
    for e in hist.events:
        assert e.correlation_id == "wf-123"
        assert e.created_at.tzinfo is not None
        assert e.created_at.utcoffset() == dt.timedelta(0)
        assert before - dt.timedelta(milliseconds=1) <= e.created_at <= after


async def test_stale_expected_is_rejected_with_the_real_position(store: Store) -> None:
    pid = uuid.uuid4()
    await store.append(pid, [deposit(1), deposit(2)], expected=0)
    for wrong in (0, 1, 3, 10):
        with pytest.raises(ConcurrencyError) as info:
            await store.append(pid, [deposit(3)], expected=wrong)
        assert info.value.expected == wrong
        assert info.value.actual == 2
    assert [e.sequence for e in (await store.load(pid)).events] == [0, 1]


async def test_expected_any_appends_at_the_end(store: Store) -> None:
    pid = uuid.uuid4()
    await store.append(pid, [deposit(1)], expected=ANY)
    res = await store.append(pid, [deposit(2), deposit(3)], expected=ANY)
    assert (res.first_sequence, res.next_sequence) == (1, 3)


async def test_empty_append_writes_nothing(store: Store) -> None:
    pid = uuid.uuid4()
    res = await store.append(pid, [], expected=0)
    assert (res.first_sequence, res.next_sequence) == (0, 0)
    await store.append(pid, [deposit(1)], expected=0)
    res = await store.append(pid, [], expected=1)
    assert (res.first_sequence, res.next_sequence) == (1, 1)
    assert len((await store.load(pid)).events) == 1
    with pytest.raises(ConcurrencyError):
        await store.append(pid, [], expected=5)


@pytest.mark.parametrize("bad", [b"bytes", "text", 42, None, {"a": 1}])
async def test_non_protobuf_events_are_refused_before_sending(store: Store, bad: object) -> None:
    pid = uuid.uuid4()
    with pytest.raises(TypeError):
        await store.append(pid, [deposit(1), bad], expected=0)
    assert await store.next_sequence(pid) == 0


async def test_a_single_message_instead_of_a_list_is_refused(store: Store) -> None:
    with pytest.raises(TypeError):
        await store.append("p", deposit(1), expected=0)


@pytest.mark.parametrize("bad", [-1, 1.0, "0", None, True])
async def test_bad_expected_values_are_refused(store: Store, bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        await store.append("p", [deposit(1)], expected=bad)


async def test_partial_ranges(store: Store) -> None:
    pid = "ranges"
    await store.append(pid, [deposit(i) for i in range(3)], expected=0)
    await store.append(pid, [deposit(i) for i in range(3, 7)], expected=3)
    await store.append(pid, [deposit(7)], expected=7)
    for lo, hi in [
        (0, None),
        (0, 8),
        (2, 5),
        (3, 7),
        (7, 8),
        (5, 5),
        (8, None),
        (20, None),
        (0, 1),
    ]:
        hist = await store.load(pid, lo, hi)
        expect = list(range(8))[lo:hi]
        assert [e.sequence for e in hist.events] == expect, (lo, hi)
        assert [e.event.amount_cents for e in hist.events] == expect  # type: ignore[attr-defined]
        assert hist.next_sequence == 8
        assert [e.sequence async for e in store.iter(pid, lo, hi)] == expect


@pytest.mark.parametrize(("lo", "hi"), [(-1, None), (3, 2), (0, -1)])
async def test_bad_ranges_are_refused(store: Store, lo: int, hi: int | None) -> None:
    with pytest.raises(ValueError):
        await store.load("p", lo, hi)


async def test_aggregates_and_domains_are_isolated(stores: StoreFactory) -> None:
    players, hands = stores("player"), stores("hand")
    a, b = uuid.uuid4(), uuid.uuid4()
    await players.append(a, [deposit(1)], expected=0)
    await players.append(b, [deposit(2), deposit(3)], expected=0)
    await hands.append(a, [hand_pb2.PlayerFolded(player_id="x")], expected=0)
    assert [e.event.amount_cents for e in (await players.load(a)).events] == [1]
    assert [e.event.amount_cents for e in (await players.load(b)).events] == [2, 3]
    assert [e.type_name for e in (await hands.load(a)).events] == ["examples.hand.PlayerFolded"]
    assert (await hands.load(b)).events == []


HOSTILE_IDS = [
    "a.b",
    "*",
    ">",
    "a.*",
    "a.>",
    " ",
    "with space",
    "tab\there",
    "new\nline",
    "héllo wörld",
    "日本語",
    "🃏",
    "~",
    "~Kg",
    "$JS.API",
    "a" * 1024,
    "..",
    "\x00",
]


async def test_hostile_ids_are_distinct_aggregates(store: Store) -> None:
    for i, root in enumerate(HOSTILE_IDS):
        await store.append(root, [deposit(i)], expected=0)
    for i, root in enumerate(HOSTILE_IDS):
        hist = await store.load(root)
        assert [e.event.amount_cents for e in hist.events] == [i], root  # type: ignore[attr-defined]


async def test_uuid_and_its_canonical_string_are_the_same_aggregate(store: Store) -> None:
    pid = uuid.uuid4()
    await store.append(pid, [deposit(1)], expected=0)
    await store.append(str(pid), [deposit(2)], expected=1)
    assert len((await store.load(pid)).events) == 2
    assert await store.next_sequence(str(pid)) == 2


@pytest.mark.parametrize("bad", ["", None, 7, b"bytes", "x" * 1025])
async def test_bad_aggregate_ids_are_refused(store: Store, bad: object) -> None:
    with pytest.raises(angzarr_es.InvalidAggregateId):
        await store.append(bad, [deposit(1)], expected=0)
    with pytest.raises(angzarr_es.InvalidAggregateId):
        await store.load(bad)


@pytest.mark.parametrize("bad", ["", "a.b", "*", ">", "has space", "x" * 200, None])
def test_bad_domains_are_refused(stores: StoreFactory, bad: object) -> None:
    with pytest.raises(angzarr_es.InvalidDomain):
        stores(bad)


async def test_iter_streams_every_event(store: Store) -> None:
    pid = uuid.uuid4()
    n = 0
    for _ in range(5):
        await store.append(pid, [deposit(n + i) for i in range(7)], expected=n)
        n += 7
    seen = [e.sequence async for e in store.iter(pid)]
    assert seen == list(range(35))
