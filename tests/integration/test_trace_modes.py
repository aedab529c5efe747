"""Trace headers on commits in the modes OpenTelemetry's presence decides.

Each test runs only in its mode: without opentelemetry (the hand-made W3C
headers, unchanged from before the `otel` extra existed), with it and no
tracer provider (the no-op tracer: nothing recorded, the caller's context
carried on), or with a global tracer provider set by tests/support/otel.py.
tests/integration/test_otel.py runs this file in fresh processes in each
mode, hiding the package with tests/support/no_otel.py.
"""

from __future__ import annotations

import importlib

import msgspec
import prometheus_client as prom
import pytest

import angzarr_es
from angzarr_es import filters, metrics, tracing
from angzarr_es.pb import player_pb2
from angzarr_es.tracing import TraceContext
from tests.support.bus import stored_headers

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
