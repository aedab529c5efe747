"""The store contract: every implementation (in-memory, JetStream with each
replay strategy, JetStream with the hot-aggregate cache) must pass these,
with the same results (the `backend` fixture: tests/integration/conftest.py)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

import angzarr_es
from angzarr_es import ANY, ConcurrencyError
from angzarr_es._contract import ClientProtocol as Backend
from angzarr_es._contract import StoreProtocol as Store
from angzarr_es.pb import core_pb2, hand_pb2, player_pb2
from tests.support.events import deposit

StoreFactory = Any


@pytest.fixture
def stores(backend: Backend) -> StoreFactory:
    """A factory (domain, edition=None) -> store for one implementation."""
    return backend.store


@pytest.fixture
def store(stores: StoreFactory) -> Store:
    s: Store = stores("player")
    return s


async def test_new_aggregate_is_empty(store: Store) -> None:
    pid = uuid.uuid4()
    hist = await store.load(pid)
    assert hist.events == []
    assert hist.next_sequence == 0
    assert await store.next_sequence(pid) == 0
    assert await store.next_sequence(pid, leader=True) == 0


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
    assert await store.next_sequence(pid, leader=True) == 5


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


async def test_an_append_repeated_with_its_key_stores_nothing(store: Store) -> None:
    pid = uuid.uuid4()
    first = await store.append(pid, [deposit(1), deposit(2)], expected=0, idempotency_key="c-1")
    assert (first.first_sequence, first.next_sequence, first.duplicate) == (0, 2, False)
    # A retry after a lost reply: the same key, the same (now stale) expected.
    again = await store.append(pid, [deposit(1), deposit(2)], expected=0, idempotency_key="c-1")
    assert again.duplicate
    assert (again.first_sequence, again.next_sequence) == (0, 2)
    assert again.stream_sequence == first.stream_sequence
    # Another writer moves on; the key still finds its commit, with ANY too.
    await store.append(pid, [deposit(3)], expected=2)
    for expected in (0, ANY, 3):
        late = await store.append(pid, [deposit(1)], expected=expected, idempotency_key="c-1")
        assert (late.first_sequence, late.next_sequence, late.duplicate) == (0, 2, True)
    # Another key, or none, is an append like any other.
    with pytest.raises(ConcurrencyError):
        await store.append(pid, [deposit(4)], expected=0, idempotency_key="c-2")
    fresh = await store.append(pid, [deposit(4)], expected=3, idempotency_key="c-2")
    assert (fresh.first_sequence, fresh.duplicate) == (3, False)
    hist = await store.load(pid)
    assert [e.event.amount_cents for e in hist.events] == [1, 2, 3, 4]  # type: ignore[attr-defined]


async def test_a_key_is_scoped_to_its_aggregate(store: Store) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    await store.append(a, [deposit(1)], expected=ANY, idempotency_key="same")
    other = await store.append(b, [deposit(2)], expected=ANY, idempotency_key="same")
    assert (other.first_sequence, other.duplicate) == (0, False)
    assert [e.event.amount_cents for e in (await store.load(b)).events] == [2]  # type: ignore[attr-defined]


async def test_a_key_replayed_after_its_edition_was_deleted_stores_again(
    backend: Backend, stores: StoreFactory
) -> None:
    # The server remembers the key's id for its duplicate window, past the
    # purge; the replay of a deleted what-if timeline must still be stored.
    what_if = stores("player", "replay")
    await what_if.append("p", [deposit(1)], expected=0, idempotency_key="cmd")
    assert await backend.delete_edition("replay") == 1
    again = await what_if.append("p", [deposit(2)], expected=0, idempotency_key="cmd")
    assert (again.first_sequence, again.next_sequence, again.duplicate) == (0, 1, False)
    repeat = await what_if.append("p", [deposit(2)], expected=ANY, idempotency_key="cmd")
    assert (repeat.first_sequence, repeat.duplicate) == (0, True)
    assert repeat.stream_sequence == again.stream_sequence
    assert [e.event.amount_cents for e in (await what_if.load("p")).events] == [2]


@pytest.mark.parametrize("bad", ["with space", "tab\t", "é", "x" * 201, 7, None])
async def test_bad_idempotency_keys_are_refused_before_sending(store: Store, bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        await store.append("p", [deposit(1)], expected=0, idempotency_key=bad)  # type: ignore[arg-type]
    assert await store.next_sequence("p") == 0


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
        await store.append(pid, [deposit(1), bad], expected=0)  # type: ignore[list-item]
    assert await store.next_sequence(pid) == 0


async def test_a_single_message_instead_of_a_list_is_refused(store: Store) -> None:
    with pytest.raises(TypeError):
        await store.append("p", deposit(1), expected=0)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, 1.0, "0", None, True])
async def test_bad_expected_values_are_refused(store: Store, bad: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        await store.append("p", [deposit(1)], expected=bad)  # type: ignore[arg-type]


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


async def test_a_uuid_in_any_text_form_is_the_uuids_aggregate(backend: Backend) -> None:
    """`str(u).upper()` named another aggregate than `u` (issue 19): a string in
    a UUID's text form is the UUID, stored, listed and delivered canonically."""
    store = backend.store("player")
    pid = uuid.uuid4()
    text = str(pid)
    forms: list[uuid.UUID | str] = [pid, text, text.upper(), f"{{{text}}}", f"urn:uuid:{text}"]
    for n, form in enumerate(forms):
        await store.append(form, [deposit(n)], expected=n, correlation_id="wf")
    for form in forms:
        hist = await store.load(form)
        assert [e.event.amount_cents for e in hist.events] == list(range(len(forms)))  # type: ignore[attr-defined]
        assert await store.next_sequence(form) == len(forms)
    assert await roots_of(store) == [text]
    assert list(await backend.events_by_correlation("wf")) == [("player", text)]
    # 32 hex digits without hyphens (a digest, say) stay an id of their own.
    await store.append(pid.hex, [deposit(9)], expected=0)
    assert sorted(await roots_of(store)) == sorted([text, pid.hex])
    # Correlation ids are not aggregate ids: each spelling is its own.
    assert await backend.events_by_correlation("WF") == {}


@pytest.mark.parametrize("bad", ["", None, 7, b"bytes", "x" * 1025])
async def test_bad_aggregate_ids_are_refused(store: Store, bad: object) -> None:
    with pytest.raises(angzarr_es.InvalidAggregateId):
        await store.append(bad, [deposit(1)], expected=0)  # type: ignore[arg-type]
    with pytest.raises(angzarr_es.InvalidAggregateId):
        await store.load(bad)  # type: ignore[arg-type]


async def test_ids_angzarr_cannot_read_are_refused_in_its_layout(backend: Backend) -> None:
    """In per-domain layout (angzarr's) a root must be a UUID: angzarr's
    consumers read `Cover.root` as 16 bytes. The single layout takes any id."""
    raw: Backend = getattr(backend, "inner", backend)  # the ids as given, unmapped
    store = raw.store("player")
    if raw.config.nats.stream_layout == "single":
        await store.append("plain", [deposit(1)], expected=0)
        assert (await store.load("plain")).next_sequence == 1
        return
    for call in (
        lambda: store.append("plain", [deposit(1)], expected=0),
        lambda: store.load("plain"),
        lambda: store.next_sequence(uuid.uuid4().hex),  # 32 hex digits: no UUID text
        lambda: store.save_snapshot("plain", balance(1), 0),
    ):
        with pytest.raises(angzarr_es.InvalidAggregateId, match=r"not a UUID.*16 bytes"):
            await call()
    with pytest.raises(angzarr_es.InvalidAggregateId, match="not a UUID"):
        [e async for e in store.iter("plain")]
    assert [r async for r in store.list_roots()] == []


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


# -- discovery -----------------------------------------------------------------


async def roots_of(store: Store) -> list[str]:
    return [r async for r in store.list_roots()]


async def test_list_roots_lists_every_aggregate_exactly_as_given(store: Store) -> None:
    pid = uuid.uuid4()
    ids = [*HOSTILE_IDS, "plain", "with-dash", "a", "a-"]
    for root in [*ids, pid]:
        await store.append(root, [deposit(1)], expected=0)  # type: ignore[arg-type]
    await store.append("plain", [deposit(2)], expected=1)  # one aggregate, two commits
    listed = await roots_of(store)
    assert sorted(listed) == sorted([*ids, str(pid)])
    assert len(listed) == len(set(listed))


async def test_list_roots_of_an_unused_domain_is_empty(stores: StoreFactory) -> None:
    await stores("player").append("p1", [deposit(1)], expected=0)
    await stores("player", "what-if").append("p2", [deposit(1)], expected=0)
    assert await roots_of(stores("nobody")) == []
    assert await roots_of(stores("nobody", "what-if")) == []
    assert await roots_of(stores("player", "never-used")) == []


async def test_list_roots_sees_only_its_domain_and_edition(stores: StoreFactory) -> None:
    await stores("player").append("main-only", [deposit(1)], expected=0)
    await stores("player").append("both", [deposit(1)], expected=0)
    await stores("player", "what-if").append("both", [deposit(1)], expected=0)
    await stores("player", "what-if").append("edition-only", [deposit(1)], expected=0)
    await stores("player", "other").append("other-only", [deposit(1)], expected=0)
    await stores("hand").append("hand-only", [deposit(1)], expected=0)
    assert sorted(await roots_of(stores("player"))) == ["both", "main-only"]
    assert sorted(await roots_of(stores("player", "what-if"))) == ["both", "edition-only"]
    assert await roots_of(stores("player", "other")) == ["other-only"]
    assert await roots_of(stores("hand")) == ["hand-only"]


async def test_an_empty_append_creates_no_aggregate(store: Store) -> None:
    await store.append("ghost", [], expected=0)
    assert await roots_of(store) == []


async def test_list_domains(backend: Backend) -> None:
    assert [d async for d in backend.list_domains()] == []
    await backend.store("player").append("p", [deposit(1)], expected=0)
    await backend.store("player").append("q", [deposit(1)], expected=0)
    await backend.store("hand").append("h", [deposit(1)], expected=0)
    await backend.store("table", "what-if").append("t", [deposit(1)], expected=0)
    domains = [d async for d in backend.list_domains()]
    assert sorted(domains) == ["hand", "player"]


# -- snapshots -----------------------------------------------------------------


def balance(cents: int) -> player_pb2.PlayerState:
    return player_pb2.PlayerState(name="Ann", balance_cents=cents)


async def test_snapshot_load_returns_the_state_and_only_later_events(store: Store) -> None:
    pid = uuid.uuid4()
    await store.append(pid, [deposit(i) for i in range(3)], expected=0)
    await store.append(pid, [deposit(i) for i in range(3, 6)], expected=3)
    await store.append(pid, [deposit(6)], expected=6)
    # Taken after event 4, inside the second commit.
    await store.save_snapshot(pid, balance(10), 4)
    hist = await store.load(pid, snapshot=True)
    assert hist.snapshot is not None
    assert hist.snapshot.sequence == 4
    assert hist.snapshot.state == balance(10)
    assert [e.sequence for e in hist.events] == [5, 6]
    assert hist.next_sequence == 7
    plain = await store.load(pid)
    assert plain.snapshot is None
    assert [e.sequence for e in plain.events] == list(range(7))


async def test_snapshot_of_the_last_event_leaves_no_events(store: Store) -> None:
    await store.append("s", [deposit(1), deposit(2)], expected=0)
    await store.save_snapshot("s", balance(3), 1)
    hist = await store.load("s", snapshot=True)
    assert hist.snapshot is not None
    assert hist.snapshot.sequence == 1
    assert hist.events == []
    assert hist.next_sequence == 2
    await store.append("s", [deposit(3)], expected=2)
    hist = await store.load("s", snapshot=True)
    assert [e.sequence for e in hist.events] == [2]
    assert hist.next_sequence == 3


async def test_snapshot_of_an_old_sequence(store: Store) -> None:
    for n in range(20):
        await store.append("old", [deposit(2 * n), deposit(2 * n + 1)], expected=2 * n)
    for seq in (0, 1, 7, 22, 38):
        await store.save_snapshot("old", balance(seq), seq)
        hist = await store.load("old", snapshot=True)
        assert hist.snapshot is not None
        assert hist.snapshot.sequence == seq
        assert [e.sequence for e in hist.events] == list(range(seq + 1, 40))
        assert hist.next_sequence == 40


async def test_load_with_snapshot_but_none_saved_replays_everything(store: Store) -> None:
    await store.append("n", [deposit(1), deposit(2)], expected=0)
    hist = await store.load("n", snapshot=True)
    assert hist.snapshot is None
    assert [e.sequence for e in hist.events] == [0, 1]
    assert hist.next_sequence == 2
    empty = await store.load("never", snapshot=True)
    assert (empty.snapshot, empty.events, empty.next_sequence) == (None, [], 0)


async def test_the_latest_snapshot_wins(store: Store) -> None:
    await store.append("l", [deposit(i) for i in range(5)], expected=0)
    await store.save_snapshot("l", balance(1), 1)
    await store.save_snapshot("l", balance(3), 3)
    hist = await store.load("l", snapshot=True)
    assert hist.snapshot is not None
    assert (hist.snapshot.sequence, hist.snapshot.state) == (3, balance(3))
    assert [e.sequence for e in hist.events] == [4]


async def test_a_snapshot_keeps_its_retention_and_when_it_was_saved(store: Store) -> None:
    await store.append("k", [deposit(i) for i in range(3)], expected=0)
    before = dt.datetime.now(dt.UTC)
    await store.save_snapshot("k", balance(1), 1, retention=core_pb2.RETENTION_PERSIST)
    after = dt.datetime.now(dt.UTC)
    hist = await store.load("k", snapshot=True)
    assert hist.snapshot is not None
    assert hist.snapshot.retention == core_pb2.RETENTION_PERSIST
    created = hist.snapshot.created_at
    assert created is not None
    assert created.utcoffset() == dt.timedelta(0)
    assert before - dt.timedelta(milliseconds=1) <= created <= after
    await store.save_snapshot("k", balance(2), 2)
    latest = (await store.load("k", snapshot=True)).snapshot
    assert latest is not None
    assert (latest.sequence, latest.retention) == (2, core_pb2.RETENTION_DEFAULT)


@pytest.mark.parametrize("bad", [3, -1, True, "RETENTION_PERSIST", None])
async def test_an_unknown_snapshot_retention_is_refused(store: Store, bad: object) -> None:
    await store.append("u", [deposit(1)], expected=0)
    with pytest.raises(angzarr_es.InvalidSnapshot, match="RETENTION_PERSIST"):
        await store.save_snapshot("u", balance(0), 0, retention=bad)  # type: ignore[arg-type]
    assert (await store.load("u", snapshot=True)).snapshot is None


async def test_snapshot_and_ranges(store: Store) -> None:
    await store.append("r", [deposit(i) for i in range(10)], expected=0)
    await store.save_snapshot("r", balance(5), 5)
    # A snapshot at or past to_sequence cannot be used.
    hist = await store.load("r", 0, 4, snapshot=True)
    assert hist.snapshot is None
    assert [e.sequence for e in hist.events] == [0, 1, 2, 3]
    hist = await store.load("r", 0, 8, snapshot=True)
    assert hist.snapshot is not None
    assert [e.sequence for e in hist.events] == [6, 7]
    hist = await store.load("r", 8, snapshot=True)
    assert [e.sequence for e in hist.events] == [8, 9]
    assert hist.next_sequence == 10


@pytest.mark.parametrize("seq", [3, 4, 100])
async def test_a_snapshot_ahead_of_the_aggregate_is_refused(store: Store, seq: int) -> None:
    await store.append("a", [deposit(i) for i in range(3)], expected=0)
    with pytest.raises(angzarr_es.InvalidSnapshot):
        await store.save_snapshot("a", balance(0), seq)
    assert (await store.load("a", snapshot=True)).snapshot is None


async def test_a_snapshot_of_a_new_aggregate_is_refused(store: Store) -> None:
    with pytest.raises(angzarr_es.InvalidSnapshot):
        await store.save_snapshot("new", balance(0), 0)


@pytest.mark.parametrize("bad", [-1, 1.5, "2", None, True])
async def test_bad_snapshot_sequences_are_refused(store: Store, bad: object) -> None:
    await store.append("b", [deposit(i) for i in range(3)], expected=0)
    with pytest.raises(angzarr_es.InvalidSnapshot):
        await store.save_snapshot("b", balance(0), bad)  # type: ignore[arg-type]


async def test_a_non_protobuf_state_is_refused(store: Store) -> None:
    await store.append("b", [deposit(1)], expected=0)
    with pytest.raises(TypeError):
        await store.save_snapshot("b", {"balance": 1}, 0)  # type: ignore[arg-type]


async def test_snapshots_are_per_aggregate_and_edition(stores: StoreFactory) -> None:
    main, what_if = stores("player"), stores("player", "what-if")
    for s in (main, what_if, stores("hand")):
        await s.append("x", [deposit(i) for i in range(4)], expected=0)
    await main.append("y", [deposit(1), deposit(2)], expected=0)
    await main.save_snapshot("x", balance(2), 2)
    assert (await what_if.load("x", snapshot=True)).snapshot is None
    assert (await stores("hand").load("x", snapshot=True)).snapshot is None
    assert (await main.load("y", snapshot=True)).snapshot is None
    await what_if.save_snapshot("x", balance(0), 0)
    hist = await main.load("x", snapshot=True)
    assert hist.snapshot is not None
    assert hist.snapshot.sequence == 2
    hist = await what_if.load("x", snapshot=True)
    assert hist.snapshot is not None
    assert hist.snapshot.sequence == 0
    assert [e.sequence for e in hist.events] == [1, 2, 3]


# -- correlation ---------------------------------------------------------------


async def test_events_by_correlation_per_aggregate_across_domains(backend: Backend) -> None:
    players, hands = backend.store("player"), backend.store("hand")
    a, b = uuid.uuid4(), uuid.uuid4()
    await players.append(a, [player_pb2.PlayerRegistered(name="A")], expected=0)
    await players.append(a, [deposit(1), deposit(2)], expected=1, correlation_id="wf-1")
    await players.append(a, [deposit(3)], expected=3, correlation_id="wf-2")
    await hands.append(
        "h.1", [hand_pb2.PlayerFolded(player_id="x")], expected=0, correlation_id="wf-1"
    )
    await players.append(b, [deposit(4)], expected=0, correlation_id="wf-1")
    await players.append(a, [deposit(5)], expected=4, correlation_id="wf-1")
    found = await backend.events_by_correlation("wf-1")
    assert list(found) == [("player", str(a)), ("hand", "h.1"), ("player", str(b))]
    assert [e.sequence for e in found[("player", str(a))]] == [1, 2, 4]
    assert [e.event.amount_cents for e in found[("player", str(a))]] == [1, 2, 5]  # type: ignore[attr-defined]
    assert [e.type_name for e in found[("hand", "h.1")]] == ["examples.hand.PlayerFolded"]
    assert [e.sequence for e in found[("player", str(b))]] == [0]
    assert all(e.correlation_id == "wf-1" for events in found.values() for e in events)
    wf2 = await backend.events_by_correlation("wf-2")
    assert {k: [e.sequence for e in v] for k, v in wf2.items()} == {("player", str(a)): [3]}


async def test_bad_correlation_ids_are_refused_alike(backend: Backend) -> None:
    store = backend.store("player")
    with pytest.raises(TypeError, match="correlation_id must be a str"):
        await store.append("p", [deposit(1)], expected=0, correlation_id=5)  # type: ignore[arg-type]
    with pytest.raises(angzarr_es.InvalidAggregateId, match=r"^correlation id is 2000 bytes"):
        await store.append("p", [deposit(1)], expected=0, correlation_id="c" * 2000)
    with pytest.raises(angzarr_es.InvalidAggregateId, match=r"^correlation id is 2000 bytes"):
        await backend.events_by_correlation("c" * 2000)
    assert (await store.load("p")).events == []


async def test_unknown_correlation_is_empty(backend: Backend) -> None:
    await backend.store("player").append("p", [deposit(1)], expected=0)
    assert await backend.events_by_correlation("nothing") == {}


@pytest.mark.parametrize("cid", ["wf.1", "*", "a b", "日本", "~x", "wf-1"])
async def test_hostile_correlation_ids_do_not_mix(backend: Backend, cid: str) -> None:
    store = backend.store("player")
    await store.append("p", [deposit(1)], expected=0, correlation_id=cid)
    await store.append("q", [deposit(2)], expected=0, correlation_id=cid + ">")
    found = await backend.events_by_correlation(cid)
    assert {k: [e.sequence for e in v] for k, v in found.items()} == {("player", "p"): [0]}


async def test_a_refused_correlated_commit_is_not_indexed(backend: Backend) -> None:
    store = backend.store("player")
    await store.append("p", [deposit(1)], expected=0, correlation_id="wf")
    with pytest.raises(ConcurrencyError):
        await store.append("p", [deposit(2)], expected=0, correlation_id="wf")
    found = await backend.events_by_correlation("wf")
    assert {k: [e.sequence for e in v] for k, v in found.items()} == {("player", "p"): [0]}


async def test_correlation_is_per_edition(backend: Backend) -> None:
    await backend.store("player").append("p", [deposit(1)], expected=0, correlation_id="wf")
    await backend.store("player", "what-if").append(
        "p", [deposit(2), deposit(3)], expected=0, correlation_id="wf"
    )
    main = await backend.events_by_correlation("wf")
    assert {k: [e.sequence for e in v] for k, v in main.items()} == {("player", "p"): [0]}
    alt = await backend.events_by_correlation("wf", edition="what-if")
    assert {k: [e.sequence for e in v] for k, v in alt.items()} == {("player", "p"): [0, 1]}
    await backend.delete_edition("what-if")
    assert await backend.events_by_correlation("wf", edition="what-if") == {}
    assert list(await backend.events_by_correlation("wf")) == [("player", "p")]


# -- temporal reads ------------------------------------------------------------


def instant_between() -> dt.datetime:
    """Now, after waiting until the clock has moved past it (microsecond precision)."""
    mark = dt.datetime.now(dt.UTC)
    while dt.datetime.now(dt.UTC) <= mark:
        pass
    return mark


async def test_load_as_of_returns_the_history_up_to_that_instant(store: Store) -> None:
    pid = uuid.uuid4()
    before = instant_between()
    await store.append(pid, [deposit(0), deposit(1)], expected=0)
    t1 = instant_between()
    await store.append(pid, [deposit(2)], expected=2)
    t2 = instant_between()
    await store.append(pid, [deposit(3), deposit(4)], expected=3)
    for as_of, expect in [(before, []), (t1, [0, 1]), (t2, [0, 1, 2])]:
        hist = await store.load(pid, as_of=as_of)
        assert [e.sequence for e in hist.events] == expect
        assert hist.next_sequence == 5
    hist = await store.load(pid, as_of=dt.datetime.now(dt.UTC))
    assert [e.sequence for e in hist.events] == [0, 1, 2, 3, 4]
    # Inclusive: an event created exactly at `as_of` belongs to the history.
    last = hist.events[-1].created_at
    assert [e.sequence for e in (await store.load(pid, as_of=last)).events] == [0, 1, 2, 3, 4]
    first = hist.events[0].created_at
    assert [e.sequence for e in (await store.load(pid, as_of=first)).events] == [0, 1]
    # Combined with a range, and in another time zone.
    cet = dt.timezone(dt.timedelta(hours=1))
    hist = await store.load(pid, 1, 3, as_of=t2.astimezone(cet))
    assert [e.sequence for e in hist.events] == [1, 2]


async def test_bad_as_of_values_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="aware"):
        await store.load("p", as_of=dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="snapshot"):
        await store.load("p", as_of=dt.datetime.now(dt.UTC), snapshot=True)
    with pytest.raises(TypeError):
        await store.load("p", as_of="2026-01-01")  # type: ignore[arg-type]


# -- editions ------------------------------------------------------------------


async def test_an_edition_is_an_independent_timeline(stores: StoreFactory) -> None:
    main, what_if = stores("player"), stores("player", "what-if")
    assert (main.edition, what_if.edition) == ("", "what-if")
    await main.append("p", [deposit(1), deposit(2)], expected=0)
    res = await what_if.append("p", [deposit(10)], expected=0)
    assert (res.first_sequence, res.next_sequence) == (0, 1)
    with pytest.raises(ConcurrencyError) as info:
        await what_if.append("p", [deposit(11)], expected=2)
    assert info.value.actual == 1
    await main.append("p", [deposit(3)], expected=2)
    await what_if.append("p", [deposit(11)], expected=1)
    assert [e.event.amount_cents for e in (await main.load("p")).events] == [1, 2, 3]
    assert [e.event.amount_cents for e in (await what_if.load("p")).events] == [10, 11]
    assert await main.next_sequence("p") == 3
    assert await what_if.next_sequence("p") == 2
    assert [e.sequence async for e in what_if.iter("p")] == [0, 1]


@pytest.mark.parametrize("alias", [None, "", "angzarr"])
async def test_the_main_timeline_is_reachable_by_its_aliases(
    stores: StoreFactory, alias: str | None
) -> None:
    await stores("player").append("p", [deposit(1)], expected=0)
    aliased = stores("player", alias)
    assert aliased.edition == ""
    await aliased.append("p", [deposit(2)], expected=1)
    assert [e.sequence for e in (await stores("player").load("p")).events] == [0, 1]


@pytest.mark.parametrize("bad", ["a.b", "*", ">", "has space", "x" * 200, 7])
def test_bad_edition_names_are_refused(stores: StoreFactory, bad: object) -> None:
    with pytest.raises(angzarr_es.InvalidEdition):
        stores("player", bad)


async def test_deleting_an_edition_removes_it_whole(backend: Backend) -> None:
    main, what_if = backend.store("player"), backend.store("player", "what-if")
    hands_what_if, other = backend.store("hand", "what-if"), backend.store("player", "other")
    for s in (main, what_if, hands_what_if, other):
        await s.append("p", [deposit(1), deposit(2)], expected=0)
        await s.append("q", [deposit(3)], expected=0)
    await what_if.append("p", [deposit(4)], expected=2)
    await what_if.save_snapshot("p", balance(1), 1)
    removed = await backend.delete_edition("what-if")
    assert removed == 5  # three commits of player, two of hand
    for s in (what_if, hands_what_if):
        assert await roots_of(s) == []
        hist = await s.load("p", snapshot=True)
        assert (hist.events, hist.next_sequence, hist.snapshot) == ([], 0, None)
    for s in (main, other):
        assert sorted(await roots_of(s)) == ["p", "q"]
        assert [e.sequence for e in (await s.load("p")).events] == [0, 1]
    # The edition can start over from 0.
    res = await what_if.append("p", [deposit(9)], expected=0)
    assert (res.first_sequence, res.next_sequence) == (0, 1)
    assert await backend.delete_edition("never-used") == 0


@pytest.mark.parametrize("main", ["", "angzarr"])
async def test_deleting_the_main_timeline_is_refused(backend: Backend, main: str) -> None:
    await backend.store("player").append("p", [deposit(1)], expected=0)
    with pytest.raises(angzarr_es.InvalidEdition):
        await backend.delete_edition(main)
    assert await backend.store("player").next_sequence("p") == 1


async def test_domains_roots_and_editions_never_see_each_others_events(
    backend: Backend,
) -> None:
    places = [
        (domain, edition, root)
        for domain in ("player", "hand")
        for edition in ("", "what-if", "other")
        for root in ("r1", "r1.what-if", "r2")
    ]
    for n, (domain, edition, root) in enumerate(places):
        await backend.store(domain, edition).append(
            root, [deposit(n), deposit(n + 1000)], expected=0, correlation_id=f"wf-{n % 2}"
        )
    for n, (domain, edition, root) in enumerate(places):
        store = backend.store(domain, edition)
        hist = await store.load(root)
        assert [e.event.amount_cents for e in hist.events] == [n, n + 1000]  # type: ignore[attr-defined]
        assert sorted(await roots_of(store)) == ["r1", "r1.what-if", "r2"]
    for edition in ("", "what-if", "other"):
        found = await backend.events_by_correlation("wf-0", edition=edition)
        expect = [(d, r) for n, (d, e, r) in enumerate(places) if e == edition and n % 2 == 0]
        assert sorted(found) == sorted(expect)
