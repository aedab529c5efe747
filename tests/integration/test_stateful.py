"""Hypothesis stateful tests against the real server, from two independent
clients (as two processes would), checked step by step against the in-memory
implementation as the model: appends, loads and conflicts (InMemoryEventStore),
then editions, snapshots, correlation, discovery and deleting editions
(InMemoryClient); and the hot-aggregate cache, whose loads are checked against
a client without it after appends, purges and deleted editions."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    rule,
    run_state_machine_as_test,
)

import angzarr_es
from angzarr_es import ANY, ConcurrencyError, History, InvalidSnapshot
from angzarr_es.pb import player_pb2
from angzarr_es.testing import InMemoryClient, InMemoryEventStore, faults
from angzarr_es.testing.faults import Batch, BatchForward, Forward, Message, Reply, Request
from tests.support import jsadmin
from tests.support.configs import fresh_config, with_nats
from tests.support.wirefaults import ack_of, is_commit

ROOTS = ["alice", "b.o.b", "*", "🃏", str(uuid.UUID(int=7)), uuid.UUID(int=8)]
EDITION_ROOTS = ["b.o.b", "🃏", str(uuid.UUID(int=7))]


def search(examples: int, steps: int) -> settings:
    """A random search: `examples` runs of up to `steps` rules each."""
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def hunt(examples: int, steps: int) -> settings:
    """A fixed search for a planted bug, so that whether it is found never
    depends on the run's random seed; finding it is the point (no shrinking)."""
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
    )


class Shared:
    """One event loop, one stream and two clients for every example of a run;
    each example gets a domain of its own, so examples never interfere."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.config = fresh_config(url)
        self.clients = [
            self.loop.run_until_complete(angzarr_es.connect(config=self.config)) for _ in range(2)
        ]
        self.loop.run_until_complete(self.clients[0].provision())
        self.domains = itertools.count()
        self._others: dict[int, angzarr_es.Client] = {}

    def client(self, cache_bytes: int) -> angzarr_es.Client:
        """One more client on the stream, with a cache of `cache_bytes` (made once)."""
        if cache_bytes not in self._others:
            config = with_nats(self.config, cache_bytes=cache_bytes)
            self._others[cache_bytes] = self.loop.run_until_complete(
                angzarr_es.connect(config=config)
            )
        return self._others[cache_bytes]

    def close(self) -> None:
        try:
            for name in (self.config.nats.stream_name, self.config.nats.snapshot_stream):
                self.loop.run_until_complete(jsadmin.delete_stream(self.clients[0], name))
            for c in [*self.clients, *self._others.values()]:
                self.loop.run_until_complete(c.close())
        finally:
            self.loop.close()


class StoreMachine(RuleBasedStateMachine):
    shared: Shared

    def __init__(self) -> None:
        super().__init__()
        self.loop = self.shared.loop
        domain = f"d{next(self.shared.domains)}"
        self.real = [c.store(domain) for c in self.shared.clients]
        self.model = InMemoryEventStore(domain)
        self.amount = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def outcome(self, store: Any, root: Any, n: int, expected: Any) -> Any:
        events = []
        for _ in range(n):
            self.amount += 1
            events.append(player_pb2.FundsDeposited(amount_cents=self.amount))
        try:
            res = await store.append(root, events, expected=expected, correlation_id="c")
        except ConcurrencyError as exc:
            return ("conflict", exc.expected, exc.actual)
        return ("ok", res.first_sequence, res.next_sequence, events)

    @rule(
        writer=st.integers(0, 1),
        root=st.sampled_from(ROOTS),
        n=st.integers(0, 4),
        offset=st.one_of(st.integers(-2, 2), st.just(None)),
    )
    def append(self, writer: int, root: Any, n: int, offset: int | None) -> None:
        nxt = self.run(self.model.next_sequence(root))
        expected: Any = ANY if offset is None else max(0, nxt + offset)
        saved = self.amount
        got = self.run(self.outcome(self.real[writer], root, n, expected))
        self.amount = saved
        want = self.run(self.outcome(self.model, root, n, expected))
        assert got == want

    @rule(
        reader=st.integers(0, 1),
        root=st.sampled_from(ROOTS),
        lo=st.integers(0, 12),
        span=st.one_of(st.none(), st.integers(0, 12)),
    )
    def load(self, reader: int, root: Any, lo: int, span: int | None) -> None:
        hi = None if span is None else lo + span
        got = self.run(self.real[reader].load(root, lo, hi))
        want = self.run(self.model.load(root, lo, hi))
        assert got.next_sequence == want.next_sequence
        assert [(e.sequence, e.event, e.type_name, e.correlation_id) for e in got.events] == [
            (e.sequence, e.event, e.type_name, e.correlation_id) for e in want.events
        ]

    @rule(reader=st.integers(0, 1), root=st.sampled_from(ROOTS))
    def next_sequence(self, reader: int, root: Any) -> None:
        got = self.run(self.real[reader].next_sequence(root))
        assert got == self.run(self.model.next_sequence(root))


@pytest.fixture
def shared(nats_url: str) -> Iterator[Shared]:
    state = Shared(nats_url)
    try:
        yield state
    finally:
        state.close()


@pytest.mark.timeout(300)
def test_store_matches_the_model(shared: Shared) -> None:
    StoreMachine.shared = shared
    run_state_machine_as_test(
        StoreMachine,
        settings=search(30, 25),
    )


@pytest.mark.timeout(300)
def test_machine_detects_a_broken_store(shared: Shared) -> None:
    """The machine can fail: a store that drops every third event is caught."""

    class Broken(StoreMachine):
        def __init__(self) -> None:
            super().__init__()
            real = self.real[0]
            original = real.append

            async def lossy(root: Any, events: Any, **kw: Any) -> Any:
                events = list(events)
                if len(events) >= 3:
                    events = events[:2]
                return await original(root, events, **kw)

            real.append = lossy  # type: ignore[method-assign]

    Broken.shared = shared
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            Broken,
            settings=hunt(50, 25),
        )


# -- editions, snapshots, correlation and discovery -----------------------------


class EditionsMachine(RuleBasedStateMachine):
    shared: Shared

    def __init__(self) -> None:
        super().__init__()
        self.loop = self.shared.loop
        n = next(self.shared.domains)
        # Names of this example only: correlation and edition deletes are
        # client-wide, and the stream is shared by every example of a run.
        self.domain = f"x{n}"
        self.editions = ["", f"e{n}"]
        self.correlations = ["", f"wf{n}a", f"wf{n}b"]
        self.clients = self.shared.clients
        self.model = InMemoryClient()
        self.amount = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def existing(self, edition: int, pick: int) -> str:
        """One of EDITION_ROOTS, preferring aggregates that have events on `edition`."""
        model = self.model.store(self.domain, self.editions[edition])
        roots = self.run(_collect(model.list_roots()))
        choices = roots or EDITION_ROOTS
        return str(choices[pick % len(choices)])

    def stores(self, writer: int, edition: int) -> tuple[Any, Any]:
        ed = self.editions[edition]
        return self.clients[writer].store(self.domain, ed), self.model.store(self.domain, ed)

    @initialize(n=st.integers(1, 3), corr=st.integers(0, 2))
    def seed(self, n: int, corr: int) -> None:
        """Every example starts with an aggregate on each timeline."""
        for edition in (0, 1):
            self.append(0, edition, EDITION_ROOTS[0], n, 0, corr)

    @rule(
        writer=st.integers(0, 1),
        edition=st.integers(0, 1),
        root=st.sampled_from(EDITION_ROOTS),
        n=st.integers(1, 3),
        offset=st.one_of(st.integers(-1, 1), st.just(None)),
        corr=st.integers(0, 2),
    )
    def append(
        self, writer: int, edition: int, root: str, n: int, offset: int | None, corr: int
    ) -> None:
        real, model = self.stores(writer, edition)
        nxt = self.run(model.next_sequence(root))
        expected: Any = ANY if offset is None else max(0, nxt + offset)
        events = []
        for _ in range(n):
            self.amount += 1
            events.append(player_pb2.FundsDeposited(amount_cents=self.amount))
        cid = self.correlations[corr]
        outcomes = []
        for store in (real, model):
            try:
                res = self.run(store.append(root, events, expected=expected, correlation_id=cid))
            except ConcurrencyError as exc:
                outcomes.append(("conflict", exc.expected, exc.actual))
            else:
                outcomes.append(("ok", res.first_sequence, res.next_sequence))
        assert outcomes[0] == outcomes[1]

    @rule(
        writer=st.integers(0, 1),
        edition=st.integers(0, 1),
        pick=st.integers(0, 7),
        back=st.integers(-1, 4),
    )
    def save_snapshot(self, writer: int, edition: int, pick: int, back: int) -> None:
        real, model = self.stores(writer, edition)
        root = self.existing(edition, pick)
        seq = max(0, self.run(model.next_sequence(root)) - 1 - back)
        state = player_pb2.PlayerState(balance_cents=seq)
        outcomes = []
        for store in (real, model):
            try:
                self.run(store.save_snapshot(root, state, seq))
            except InvalidSnapshot:
                outcomes.append("refused")
            else:
                outcomes.append("saved")
        assert outcomes[0] == outcomes[1]

    @rule(
        reader=st.integers(0, 1),
        edition=st.integers(0, 1),
        pick=st.integers(0, 7),
        snapshot=st.booleans(),
    )
    def load(self, reader: int, edition: int, pick: int, snapshot: bool) -> None:
        real, model = self.stores(reader, edition)
        root = self.existing(edition, pick)
        got = self.run(real.load(root, snapshot=snapshot))
        want = self.run(model.load(root, snapshot=snapshot))
        assert got.next_sequence == want.next_sequence
        assert [(e.sequence, e.event, e.correlation_id) for e in got.events] == [
            (e.sequence, e.event, e.correlation_id) for e in want.events
        ]
        if want.snapshot is None:
            assert got.snapshot is None
        else:
            assert got.snapshot is not None
            assert (got.snapshot.sequence, got.snapshot.state) == (
                want.snapshot.sequence,
                want.snapshot.state,
            )

    @rule(reader=st.integers(0, 1), edition=st.integers(0, 1))
    def list_roots(self, reader: int, edition: int) -> None:
        real, model = self.stores(reader, edition)
        got = self.run(_collect(real.list_roots()))
        want = self.run(_collect(model.list_roots()))
        assert sorted(got) == sorted(want)

    @rule(reader=st.integers(0, 1), edition=st.integers(0, 1), corr=st.integers(1, 2))
    def by_correlation(self, reader: int, edition: int, corr: int) -> None:
        cid, ed = self.correlations[corr], self.editions[edition]
        got = self.run(self.clients[reader].events_by_correlation(cid, edition=ed))
        want = self.run(self.model.events_by_correlation(cid, edition=ed))
        assert [(k, [(e.sequence, e.event) for e in v]) for k, v in got.items()] == [
            (k, [(e.sequence, e.event) for e in v]) for k, v in want.items()
        ]

    @rule(writer=st.integers(0, 1))
    def delete_edition(self, writer: int) -> None:
        got = self.run(self.clients[writer].delete_edition(self.editions[1]))
        assert got == self.run(self.model.delete_edition(self.editions[1]))


async def _collect(roots: Any) -> list[str]:
    return [r async for r in roots]


@pytest.mark.timeout(300)
def test_extras_match_the_model(shared: Shared) -> None:
    EditionsMachine.shared = shared
    run_state_machine_as_test(
        EditionsMachine,
        settings=search(50, 30),
    )


@pytest.mark.timeout(300)
def test_editions_machine_detects_a_broken_store(shared: Shared) -> None:
    """The machine can fail: a client whose edition stores ignore snapshots is caught."""

    class Broken(EditionsMachine):
        def stores(self, writer: int, edition: int) -> tuple[Any, Any]:
            real, model = super().stores(writer, edition)
            if edition:
                original = real.load

                async def no_snapshot(root: Any, **kw: Any) -> Any:
                    kw["snapshot"] = False
                    return await original(root, **kw)

                real.load = no_snapshot
            return real, model

    Broken.shared = shared
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            Broken,
            settings=hunt(100, 30),
        )


# -- the hot-aggregate cache against no cache -----------------------------------

CACHE_ROOTS = ["alice", "b.o.b", str(uuid.UUID(int=9))]
# The second cached client's bound: a few entries, so that evictions happen.
SMALL_CACHE = 24 * 1024


class CacheMachine(RuleBasedStateMachine):
    """Two clients with the cache (one of them small enough to evict) append,
    save snapshots, purge and delete editions; every load and iteration by
    both must equal a cache-less client's at the same moment."""

    shared: Shared

    def __init__(self) -> None:
        super().__init__()
        self.loop = self.shared.loop
        n = next(self.shared.domains)
        self.domain = f"c{n}"
        self.editions = ["", f"ce{n}"]
        self.clients = [self.shared.clients[0], self.shared.client(SMALL_CACHE)]
        self.plain = self.shared.client(0)
        self.amount = 0
        self.instants: list[dt.datetime] = []

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def stores(self, who: int, edition: int, root: str) -> tuple[Any, Any, str]:
        ed = self.editions[edition]
        cached = self.clients[who].store(self.domain, ed)
        return cached, self.plain.store(self.domain, ed), root

    @initialize(writers=st.lists(st.integers(0, 1), min_size=6, max_size=6))
    def seed(self, writers: list[int]) -> None:
        """Every aggregate of the example starts with events, by either client."""
        for i, writer in enumerate(writers):
            self.append(writer, i % 2, CACHE_ROOTS[i // 2], 1 + i % 3, 0)
            self.load(i % 2, CACHE_ROOTS[i // 2], 0, None, False, None)

    @rule(
        writer=st.integers(0, 1),
        edition=st.integers(0, 1),
        root=st.sampled_from(CACHE_ROOTS),
        n=st.integers(1, 3),
        offset=st.one_of(st.sampled_from([0, 0, 0, -1, 1]), st.just(None)),
    )
    def append(self, writer: int, edition: int, root: str, n: int, offset: int | None) -> None:
        store, plain, root = self.stores(writer, edition, root)
        nxt = self.run(plain.next_sequence(root))
        expected: Any = ANY if offset is None else max(0, nxt + offset)
        events = []
        for _ in range(n):
            self.amount += 1
            events.append(player_pb2.FundsDeposited(amount_cents=self.amount))
        try:
            self.run(store.append(root, events, expected=expected, correlation_id="c"))
        except ConcurrencyError:
            assert offset
        self.instants.append(dt.datetime.now(dt.UTC))

    @rule(
        writer=st.integers(0, 1),
        edition=st.integers(0, 1),
        root=st.sampled_from(CACHE_ROOTS),
        back=st.integers(0, 3),
    )
    def save_snapshot(self, writer: int, edition: int, root: str, back: int) -> None:
        store, plain, root = self.stores(writer, edition, root)
        seq = self.run(plain.next_sequence(root)) - 1 - back
        if seq >= 0:
            self.run(store.save_snapshot(root, player_pb2.PlayerState(balance_cents=seq), seq))

    @rule(
        edition=st.integers(0, 1),
        root=st.sampled_from(CACHE_ROOTS),
        lo=st.integers(0, 8),
        span=st.one_of(st.none(), st.integers(0, 8)),
        snapshot=st.booleans(),
        when=st.one_of(st.none(), st.integers(0, 50)),
    )
    def load(
        self,
        edition: int,
        root: str,
        lo: int,
        span: int | None,
        snapshot: bool,
        when: int | None,
    ) -> None:
        hi = None if span is None else lo + span
        as_of = None
        if when is not None and self.instants and not snapshot:
            as_of = self.instants[when % len(self.instants)]
        for reader in (0, 1):
            store, plain, root = self.stores(reader, edition, root)
            got = self.run(store.load(root, lo, hi, snapshot=snapshot, as_of=as_of))
            want = self.run(plain.load(root, lo, hi, snapshot=snapshot, as_of=as_of))
            assert _seen(got) == _seen(want)

    @rule(edition=st.integers(0, 1), root=st.sampled_from(CACHE_ROOTS), lo=st.integers(0, 8))
    def iterate(self, edition: int, root: str, lo: int) -> None:
        for reader in (0, 1):
            store, plain, root = self.stores(reader, edition, root)
            got = self.run(_events(store.iter(root, lo)))
            want = self.run(plain.load(root, lo))
            assert got == _seen(want)[1]

    @rule(
        who=st.integers(0, 2),
        what=st.sampled_from(["subject", "stream", "edition"]),
        root=st.sampled_from(CACHE_ROOTS),
    )
    def remove(self, who: int, what: str, root: str) -> None:
        """Purge one aggregate's commits or the whole stream's (every domain of
        the run), or delete the edition, from a cached client or the plain one."""
        client = self.plain if who == 2 else self.clients[who]
        if what == "edition":
            self.run(client.delete_edition(self.editions[1]))
            return
        subject = client.store(self.domain).subject(root) if what == "subject" else ""
        self.run(jsadmin.purge(client, self.shared.config.nats.stream_name, subject))


def _row(e: Any) -> tuple[Any, ...]:
    return (e.sequence, e.event, e.type_name, e.created_at, e.correlation_id)


def _seen(history: History) -> tuple[int, list[tuple[Any, ...]], Any]:
    snap = history.snapshot
    return (
        history.next_sequence,
        [_row(e) for e in history.events],
        None if snap is None else (snap.sequence, snap.state),
    )


async def _events(events: Any) -> list[tuple[Any, ...]]:
    return [_row(e) async for e in events]


@pytest.mark.timeout(300)
def test_cached_loads_match_loads_without_the_cache(shared: Shared) -> None:
    CacheMachine.shared = shared
    run_state_machine_as_test(CacheMachine, settings=search(40, 30))
    totals = [c.cache_stats for c in (shared.clients[0], shared.client(SMALL_CACHE))]
    # The run went through every path: served, missed, and found stale.
    assert sum(t.hits for t in totals)
    assert sum(t.misses for t in totals)
    assert sum(t.fallbacks for t in totals)


@pytest.mark.timeout(300)
def test_cache_machine_detects_a_cache_that_ignores_purges(shared: Shared) -> None:
    """The machine can fail: a cache whose tail check always passes is caught.
    Each client reads from a replica that keeps every commit the client wrote
    or read last on a subject, purged or not: the cache's check for its tail
    always finds it."""
    with contextlib.ExitStack() as stack:
        for client in (shared.clients[0], shared.client(SMALL_CACHE)):
            stack.enter_context(BlindReplica(client).installed())
        CacheMachine.shared = shared
        with pytest.raises(AssertionError):
            run_state_machine_as_test(CacheMachine, settings=hunt(100, 30))


class BlindReplica:
    """Answers a Direct Get batch that finds nothing with the commit last
    known at its start sequence on its subject (one the client wrote, or the
    last of a batch it read): "the tail is still there"."""

    def __init__(self, client: angzarr_es.Client) -> None:
        self.client = client
        self.known: dict[tuple[str, int], bytes] = {}

    def installed(self) -> contextlib.AbstractContextManager[None]:
        return faults.intercept(self.client, on_request=self.remember, on_batch=self.read)

    async def remember(self, request: Request, forward: Forward) -> Reply:
        reply = await forward(request)
        ack = ack_of(reply) if is_commit(self.client, request) else {}
        if "seq" in ack:
            self.known[request.subject, ack["seq"]] = request.payload
        return reply

    async def read(self, request: Request, forward: BatchForward) -> Batch:
        got = await forward(request)
        if faults.operation(request) != "DIRECT.GET":
            return got
        body = msgspec.json.decode(request.payload)
        subject, start = body.get("next_by_subj", ""), body.get("seq", 0)
        if got.messages and got.last_sequence:
            self.known[subject, got.last_sequence] = got.messages[-1].data
        elif not got.messages and (subject, start) in self.known:
            return Batch([Message(self.known[subject, start])], "204", start, 0)
        return got
