"""Hypothesis stateful test: random appends (from two independent clients, as
two processes would), loads and conflicts against the real server, checked
step by step against InMemoryEventStore as the model."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

import angzarr_es
from angzarr_es import ANY, ConcurrencyError
from angzarr_es.pb import player_pb2
from angzarr_es.testing import InMemoryEventStore
from tests.support.configs import fresh_config
from tests.support.jsadmin import delete_stream

ROOTS = ["alice", "b.o.b", "*", "🃏", str(uuid.UUID(int=7)), uuid.UUID(int=8)]


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

    def close(self) -> None:
        try:
            name = self.config.nats.stream_name
            self.loop.run_until_complete(delete_stream(self.clients[0], name))
            for c in self.clients:
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
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
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
            settings=settings(
                max_examples=50,
                stateful_step_count=25,
                derandomize=True,
                database=None,
                deadline=None,
            ),
        )
