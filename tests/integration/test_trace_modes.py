"""Trace headers on commits in the modes OpenTelemetry's presence decides.

Each test runs only in its mode: without opentelemetry (the hand-made W3C
headers, unchanged from before the `otel` extra existed), with it and no
tracer provider (the no-op tracer: nothing recorded, the caller's context
carried on), or with a global tracer provider set by tests/support/otel.py.
tests/integration/test_otel.py runs this file in fresh processes in each
mode, hiding the package with tests/support/no_otel.py.
"""

from __future__ import annotations

import asyncio
import importlib
import uuid
from typing import Any

import msgspec
import prometheus_client as prom
import pytest

import angzarr_es
from angzarr_es import filters, metrics, tracing
from angzarr_es.config import Config
from angzarr_es.pb import player_pb2
from angzarr_es.tracing import TraceContext
from tests.support.angzarr_bus import book
from tests.support.angzarr_otel import Trace
from tests.support.bus import stored_headers
from tests.support.events import deposit
from tests.support.interop import DOMAIN, beside_angzarr, consume_parents

PARENT = TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", state="k=v")
TRACE_HEADERS = {"traceparent", "tracestate", "baggage"}


def _global_provider() -> str:
    """ "none" (no opentelemetry), "proxy" (no provider set) or "sdk"."""
    if not tracing.OTEL:
        return "none"
    from opentelemetry import trace

    return "proxy" if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider) else "sdk"


hand_made = pytest.mark.skipif(tracing.OTEL, reason="without opentelemetry only")


@pytest.fixture
def no_provider() -> None:
    """Skip unless opentelemetry is in use with no tracer provider (asked when
    the test runs: another test may have set one since collection)."""
    if _global_provider() != "proxy":
        pytest.skip("needs opentelemetry and no tracer provider")


async def _traced_by_projector(client: angzarr_es.Client) -> TraceContext | None:
    """What `tracing.current()` says inside a projector handler for the first commit."""
    seen: list[TraceContext | None] = []

    async def handler(d: angzarr_es.Delivery) -> None:
        seen.append(tracing.current())

    async with client.projector("modes", filters.domain("player"), handler) as p:
        await p.wait(lambda s: s.handled == 1, timeout=20)
    return seen[0]


@hand_made
def test_the_package_is_missing() -> None:
    with pytest.raises(ImportError):
        importlib.import_module("opentelemetry.trace")


@hand_made
def test_a_tracer_provider_needs_the_package() -> None:
    with pytest.raises(RuntimeError, match=r"pip install 'angzarr-es\[otel\]'"):
        tracing.set_tracer_provider(object())


@hand_made
async def test_uninstrumented_commits_carry_no_trace(client: angzarr_es.Client) -> None:
    assert client.observer is None
    with tracing.use(PARENT):
        await client.store("player").append("plain", [player_pb2.PlayerRegistered()], expected=0)
    assert TRACE_HEADERS.isdisjoint(await stored_headers(client, "player", "plain"))


@hand_made
async def test_an_instrumented_commit_carries_a_new_span_of_the_current_trace(
    client: angzarr_es.Client,
) -> None:
    metrics.instrument(client, metrics.StoreMetrics(prom.CollectorRegistry()))
    store = client.store("player")
    with tracing.use(PARENT):
        await store.append("a", [player_pb2.PlayerRegistered()], expected=0)
    with tracing.use(msgspec.structs.replace(PARENT, state="k=" + "v" * 600)):
        await store.append("long", [player_pb2.PlayerRegistered()], expected=0)
    await store.append("fresh", [player_pb2.PlayerRegistered()], expected=0)

    headers = await stored_headers(client, "player", "a")
    assert TRACE_HEADERS & headers.keys() == {"traceparent", "tracestate"}
    sent = TraceContext.parse(headers["traceparent"], headers["tracestate"])
    assert sent is not None
    assert (sent.trace_id, sent.sampled, sent.state) == (PARENT.trace_id, True, "k=v")
    assert sent.span_id != PARENT.span_id
    assert headers["traceparent"] == f"00-{sent.trace_id}-{sent.span_id}-01"
    # A tracestate past 512 characters is dropped; no trace at all starts one.
    assert TRACE_HEADERS & (await stored_headers(client, "player", "long")).keys() == {
        "traceparent"
    }
    fresh = TraceContext.parse((await stored_headers(client, "player", "fresh"))["traceparent"])
    assert fresh is not None
    assert fresh.trace_id != PARENT.trace_id

    # The projector's handler runs in a span of its own in the commit's trace.
    handled = await _traced_by_projector(client)
    assert handled is not None
    assert handled.trace_id == sent.trace_id
    assert handled.span_id not in (sent.span_id, PARENT.span_id)


@hand_made
async def test_angzarrs_consumer_reads_the_hand_made_headers(config: Config) -> None:
    """Per-domain layout, an instrumented client: angzarr's consumer parents its
    span on the commit's span (a child of the caller's), or on the new trace
    a commit appended outside any trace starts."""
    a, b = uuid.uuid4(), uuid.uuid4()
    async with beside_angzarr(config) as (client, angzarr):
        metrics.instrument(client, metrics.StoreMetrics(prom.CollectorRegistry()))
        store = client.store(DOMAIN)
        with tracing.use(PARENT):
            await store.append(a, [deposit(1)], expected=0, correlation_id="c-1")
        await store.append(b, [deposit(1)], expected=0)
        sent = [
            TraceContext.parse(h["traceparent"], h.get("tracestate", ""))
            for h in [await stored_headers(client, DOMAIN, str(r)) for r in (a, b)]
        ]
        parents = await consume_parents(angzarr, 2)
    assert sent[0] is not None
    assert sent[1] is not None
    assert (sent[0].trace_id, sent[0].state) == (PARENT.trace_id, "k=v")
    assert parents == [
        (store.subject(a), Trace(PARENT.trace_id, sent[0].span_id, True, "k=v")),
        (store.subject(b), Trace(sent[1].trace_id, sent[1].span_id, True, "")),
    ]


@hand_made
async def test_a_trace_angzarr_publishes_continues_in_a_hand_made_handler(
    config: Config,
) -> None:
    sent = Trace(PARENT.trace_id, PARENT.span_id)
    seen: list[TraceContext | None] = []
    got = asyncio.Event()

    async def handler(d: angzarr_es.Delivery) -> None:
        seen.append(tracing.current())
        got.set()

    async with beside_angzarr(config) as (client, angzarr):
        await angzarr.publish(book(DOMAIN, uuid.uuid4(), 0, [deposit(1)]), trace=sent)
        async with client.projector("traced", filters.domain(DOMAIN), handler):
            await asyncio.wait_for(got.wait(), 20)
    (handling,) = seen
    assert handling is not None
    assert handling.trace_id == PARENT.trace_id
    assert handling.span_id != PARENT.span_id


@pytest.mark.usefixtures("no_provider")
async def test_angzarrs_consumer_continues_the_callers_trace(config: Config) -> None:
    """No tracer provider: the caller's span is what angzarr's consumer
    continues, its W3C level 2 random-trace-id flag (`03`, as the Python
    SDK sets it) cleared so that angzarr's propagator accepts it."""
    from opentelemetry import context, trace

    level2 = trace.SpanContext(
        int(PARENT.trace_id, 16),
        int(PARENT.span_id, 16),
        is_remote=False,
        trace_flags=trace.TraceFlags(0x03),  # sampled, random trace id
        trace_state=trace.TraceState([("k", "v")]),
    )
    a, b = uuid.uuid4(), uuid.uuid4()
    async with beside_angzarr(config) as (client, angzarr):
        store = client.store(DOMAIN)
        with tracing.use(PARENT):
            await store.append(a, [deposit(1)], expected=0)
        token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(level2)))
        try:
            await store.append(b, [deposit(1)], expected=0)
        finally:
            context.detach(token)
        parents = await consume_parents(angzarr, 2)
    carried = Trace(PARENT.trace_id, PARENT.span_id, True, "k=v")
    assert parents == [(store.subject(a), carried), (store.subject(b), carried)]


@pytest.mark.usefixtures("no_provider")
async def test_without_a_trace_nothing_is_written(client: angzarr_es.Client) -> None:
    await client.store("player").append("plain", [player_pb2.PlayerRegistered()], expected=0)
    assert TRACE_HEADERS.isdisjoint(await stored_headers(client, "player", "plain"))


@pytest.mark.usefixtures("no_provider")
async def test_the_current_context_is_carried_on_unchanged(client: angzarr_es.Client) -> None:
    with tracing.use(PARENT):
        await client.store("player").append("a", [player_pb2.PlayerRegistered()], expected=0)
    headers = await stored_headers(client, "player", "a")
    assert TRACE_HEADERS & headers.keys() == {"traceparent", "tracestate"}
    assert (headers["traceparent"], headers["tracestate"]) == (PARENT.traceparent, "k=v")
    assert await _traced_by_projector(client) == PARENT


@pytest.mark.usefixtures("no_provider")
async def test_an_untraced_append_asks_no_tracer_and_no_propagator(
    client: angzarr_es.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no tracer provider and nothing current, an append neither makes
    a no-op span nor asks the standard propagator (measured: a fifth of 64
    writers' throughput); a context to carry on, or a propagator the
    application set, is asked as before."""
    from opentelemetry import propagate, trace
    from opentelemetry.context import Context
    from opentelemetry.propagators.textmap import DefaultSetter, TextMapPropagator

    asked: list[str] = []
    inject, start_span = propagate.inject, trace.ProxyTracer.start_span

    def counted_inject(*args: object, **kwargs: object) -> None:
        asked.append("inject")
        inject(*args, **kwargs)  # type: ignore[arg-type]

    def counted_span(self: trace.ProxyTracer, *args: object, **kwargs: object) -> object:
        asked.append("span")
        return start_span(self, *args, **kwargs)

    monkeypatch.setattr(propagate, "inject", counted_inject)
    monkeypatch.setattr(trace.ProxyTracer, "start_span", counted_span)
    store = client.store("player")
    await store.append("a", [player_pb2.PlayerRegistered()], expected=0)
    await store.load("a")
    assert asked == []
    with tracing.use(PARENT):
        await store.append("a", [player_pb2.PlayerRegistered()], expected=1)
    assert asked == ["inject"]

    class Tagging(TextMapPropagator):
        def inject(self, carrier: Any, context: Context | None = None, setter: Any = None) -> None:
            DefaultSetter().set(carrier, "x-tag", "1")

        def extract(
            self, carrier: Any, context: Context | None = None, getter: Any = None
        ) -> Context:
            return context or Context()

        @property
        def fields(self) -> set[str]:
            return {"x-tag"}

    standard = propagate.get_global_textmap()
    propagate.set_global_textmap(Tagging())
    try:
        await store.append("b", [player_pb2.PlayerRegistered()], expected=0)
    finally:
        propagate.set_global_textmap(standard)
    assert (await stored_headers(client, "player", "b")).get("x-tag") == "1"


async def test_spans_go_to_the_global_tracer_provider(client: angzarr_es.Client) -> None:
    if _global_provider() != "sdk":
        pytest.skip("needs a global tracer provider (-p tests.support.otel)")
    from tests.support import otel

    otel.EXPORTER.clear()
    with otel.ROOT.start_as_current_span("request"):
        await client.store("player").append("a", [player_pb2.PlayerRegistered()], expected=0)
    (append,) = otel.span_named("append player")
    assert append.parent is not None
    assert otel.span_named("request")[0].context.span_id == append.parent.span_id
