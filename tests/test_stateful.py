"""Hypothesis stateful test: random appends (from two independent clients, as
two processes would), loads and conflicts against the real server, checked
step by step against InMemoryEventStore as the model."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

import angzarr_es
from angzarr_es import ANY, ConcurrencyError
from angzarr_es.pb import player_pb2
from angzarr_es.testing import InMemoryEventStore
from tests.conftest import delete_stream, fresh_config

ROOTS = ["alice", "b.o.b", "*", "🃏", str(uuid.UUID(int=7)), uuid.UUID(int=8)]


class StoreMachine(RuleBasedStateMachine):
    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.config = fresh_config(self.url)
        self.clients = [self.run(angzarr_es.connect(config=self.config)) for _ in range(2)]
        self.run(self.clients[0].provision())
        self.real = [c.store("player") for c in self.clients]
        self.model = InMemoryEventStore("player")
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

    def teardown(self) -> None:
        try:
            self.run(delete_stream(self.clients[0], self.config.nats.stream_name))
            for c in self.clients:
                self.run(c.close())
        finally:
            self.loop.close()


def test_store_matches_the_model(nats_url: str) -> None:
    StoreMachine.url = nats_url
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        StoreMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def test_machine_detects_a_broken_store(nats_url: str) -> None:
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

            real.append = lossy

    Broken.url = nats_url
    with pytest.raises(AssertionError):
        run_state_machine_as_test(  # type: ignore[no-untyped-call]
            Broken,
            settings=settings(max_examples=50, stateful_step_count=25, deadline=None),
        )
