"""OpenTelemetry (the `otel` extra): spans for appends, loads and handler calls,
trace context through the global propagator, read as angzarr's bus reads it.

Needs opentelemetry-sdk (the `test` extra installs it). The last test runs
tests/integration/test_trace_modes.py in fresh processes: once with the
package hidden (the hand-made headers) and once with no tracer provider.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

import prometheus_client as prom
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import angzarr_es
from angzarr_es import filters, metrics, tracing
from angzarr_es.config import Config
from angzarr_es.pb import player_pb2
from tests.support import otel
from tests.support.angzarr_bus import book
from tests.support.angzarr_otel import Trace
from tests.support.bus import stored_headers
from tests.support.events import deposit
from tests.support.interop import DOMAIN, beside_angzarr, consume_parents

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with otel.recording() as exporter:
        yield exporter


def attributes(span: ReadableSpan, *keys: str) -> dict[str, Any]:
    assert span.attributes is not None
    return {k: span.attributes.get(k) for k in keys}


def parent_of(span: ReadableSpan) -> int:
    assert span.parent is not None
    return int(span.parent.span_id)


async def test_the_extra_is_in_use() -> None:
    assert tracing.OTEL


def test_the_tracing_functions_work_on_opentelemetrys_context() -> None:
    valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with otel.ROOT.start_as_current_span("outer") as outer:
        started = outer.get_span_context()
        current = tracing.current()
        assert current is not None
        assert (current.trace_id, current.span_id) == (
            f"{started.trace_id:032x}",
            f"{started.span_id:016x}",
        )
        with tracing.use(None):
            assert tracing.current() is None
        with tracing.span() as inner:
            now = trace.get_current_span().get_span_context()
            assert (now.trace_id, f"{now.span_id:016x}") == (started.trace_id, inner.span_id)
        headers: dict[str, str] = {}
        sent = tracing.inject(headers)
        assert headers["traceparent"] == sent.traceparent
        assert sent.trace_id == current.trace_id
    assert tracing.current() is None
    carried = {"traceparent": valid, "tracestate": "k=v", "baggage": "tenant=t1"}
    assert tracing.extract(carried) == tracing.TraceContext(
        "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", state="k=v"
    )
    with tracing.continue_from(carried) as handling:
        assert tracing.current() == handling
        assert handling.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert handling.span_id != "00f067aa0ba902b7"
        assert baggage.get_baggage("tenant") == "t1"  # the whole carried context
    assert tracing.current() is None


async def test_a_trace_around_an_append_continues_in_a_projector_handler(
    client: angzarr_es.Client, spans: InMemorySpanExporter
) -> None:
    store = client.store("player")
    root = uuid.uuid4()
    with otel.ROOT.start_as_current_span("request") as request:
        result = await store.append(
            root, [player_pb2.FundsDeposited()], expected=0, correlation_id="c-1"
        )
    seen: list[tuple[trace.SpanContext, tracing.TraceContext | None]] = []

    async def handler(d: angzarr_es.Delivery) -> None:
        seen.append((trace.get_current_span().get_span_context(), tracing.current()))

    async with client.projector("traced", filters.domain("player"), handler) as p:
        await p.wait(lambda s: s.handled == 1, timeout=20)

    (append,) = otel.span_named("append player")
    (process,) = otel.span_named("process player")
    started = request.get_span_context()
    assert append.context is not None
    assert process.context is not None
    assert append.context.trace_id == process.context.trace_id == started.trace_id
    assert parent_of(append) == started.span_id
    assert parent_of(process) == append.context.span_id
    assert (append.kind, process.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    subject = store.subject(root)
    assert attributes(
        append,
        "messaging.system",
        "messaging.destination.name",
        "messaging.operation.type",
        "messaging.operation.name",
        "messaging.message.conversation_id",
        "angzarr_es.domain",
        "angzarr_es.root",
        "angzarr_es.expected",
        "angzarr_es.first_sequence",
        "angzarr_es.next_sequence",
        "angzarr_es.stream_sequence",
        "angzarr_es.duplicate",
    ) == {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.operation.type": "send",
        "messaging.operation.name": "append",
        "messaging.message.conversation_id": "c-1",
        "angzarr_es.domain": "player",
        "angzarr_es.root": str(root),
        "angzarr_es.expected": 0,
        "angzarr_es.first_sequence": 0,
        "angzarr_es.next_sequence": 1,
        "angzarr_es.stream_sequence": result.stream_sequence,
        "angzarr_es.duplicate": False,
    }
    assert attributes(
        process,
        "messaging.system",
        "messaging.destination.name",
        "messaging.operation.type",
        "messaging.consumer.group.name",
        "messaging.message.conversation_id",
        "angzarr_es.root",
        "angzarr_es.first_sequence",
        "angzarr_es.next_sequence",
        "angzarr_es.stream_sequence",
        "angzarr_es.delivery_count",
    ) == {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.operation.type": "process",
        "messaging.consumer.group.name": "traced",
        "messaging.message.conversation_id": "c-1",
        "angzarr_es.root": str(root),
        "angzarr_es.first_sequence": 0,
        "angzarr_es.next_sequence": 1,
        "angzarr_es.stream_sequence": result.stream_sequence,
        "angzarr_es.delivery_count": 1,
    }
    # The handler ran inside the consumer span; tracing.current() reads it.
    ((current, ours),) = seen
    assert current == process.context
    assert ours is not None
    assert ours.span_id == f"{process.context.span_id:016x}"


async def test_a_trace_around_an_append_continues_in_angzarrs_consumer(
    config: Config, spans: InMemorySpanExporter
) -> None:
    """In the per-domain layout, angzarr's consumer (tests/support/angzarr_bus.py:
    a durable pull consumer on the domain's stream; the headers extracted as
    `otel.rs` and angzarr's W3C-only propagator do) parents its `bus.consume`
    span on the append span, as the projector parents its `process` span."""
    root = uuid.uuid4()
    async with beside_angzarr(config) as (client, angzarr):
        store = client.store(DOMAIN)
        with otel.ROOT.start_as_current_span("request") as request:
            await store.append(root, [deposit(1)], expected=0, correlation_id="c-1")
        parents = await consume_parents(angzarr, 1)
        seen: list[str] = []

        async def handler(d: angzarr_es.Delivery) -> None:
            seen.append(d.headers["Angzarr-Correlation"])

        async with client.projector("traced", filters.domain(DOMAIN), handler) as p:
            await p.wait(lambda s: s.handled == 1, timeout=20)
    (append,) = otel.span_named(f"append {DOMAIN}")
    (process,) = otel.span_named(f"process {DOMAIN}")
    assert append.context is not None
    assert append.context.trace_id == request.get_span_context().trace_id
    sent = Trace(f"{append.context.trace_id:032x}", f"{append.context.span_id:016x}")
    assert parents == [(store.subject(root), sent)]
    assert parent_of(process) == append.context.span_id
    # The subject angzarr's consumer read is the destination of both spans.
    for span in (append, process):
        assert attributes(span, "messaging.system", "messaging.destination.name") == {
            "messaging.system": "nats",
            "messaging.destination.name": store.subject(root),
        }
    assert seen == ["c-1"]  # the correlation header beside the trace context


async def test_a_trace_angzarr_publishes_continues_in_a_projector_handler(
    config: Config, spans: InMemorySpanExporter
) -> None:
    """angzarr's publish writes `traceparent` and an empty `tracestate`: the
    projector's `process` span is a child of angzarr's span."""
    sent = Trace("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    root = uuid.uuid4()
    current: list[tracing.TraceContext | None] = []

    async def handler(d: angzarr_es.Delivery) -> None:
        current.append(tracing.current())

    async with beside_angzarr(config) as (client, angzarr):
        await angzarr.publish(book(DOMAIN, root, 0, [deposit(1)]), trace=sent)
        async with client.projector("traced", filters.domain(DOMAIN), handler) as p:
            await p.wait(lambda s: s.handled == 1, timeout=20)
        subject = client.store(DOMAIN).subject(root)
    (process,) = otel.span_named(f"process {DOMAIN}")
    assert process.parent is not None
    assert (process.parent.trace_id, process.parent.span_id) == (
        int(sent.trace_id, 16),
        int(sent.span_id, 16),
    )
    assert process.parent.is_remote
    assert attributes(process, "messaging.system", "messaging.destination.name") == {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
    }
    ((handling,),) = [current]
    assert handling is not None
    assert handling.trace_id == sent.trace_id


async def test_a_subscription_handler_runs_in_a_consumer_span(
    client: angzarr_es.Client, spans: InMemorySpanExporter
) -> None:
    with otel.ROOT.start_as_current_span("request"):
        await client.store("player").append("sub", [player_pb2.FundsDeposited()], expected=0)
    got = asyncio.Event()
    current: list[trace.SpanContext] = []

    async def handler(d: angzarr_es.Delivery) -> None:
        current.append(trace.get_current_span().get_span_context())
        got.set()

    async with await client.bus.subscribe(filters.domain("player"), handler, start="all"):
        await asyncio.wait_for(got.wait(), 20)
        await wait_for(lambda: otel.span_named("process player"))
    (append,) = otel.span_named("append player")
    (process,) = otel.span_named("process player")
    assert append.context is not None
    assert parent_of(process) == append.context.span_id
    assert current == [process.context]
    assert attributes(process, "messaging.consumer.group.name", "angzarr_es.root") == {
        "messaging.consumer.group.name": None,  # an ephemeral consumer: no group
        "angzarr_es.root": "sub",
    }


async def test_a_load_makes_a_client_span(
    client: angzarr_es.Client, spans: InMemorySpanExporter
) -> None:
    store = client.store("player")
    await store.append("loaded", [player_pb2.FundsDeposited()] * 3, expected=0)
    with otel.ROOT.start_as_current_span("request") as request:
        history = await store.load("loaded", 1)
    assert len(history.events) == 2
    (load,) = otel.span_named("load player")
    assert load.kind is SpanKind.CLIENT
    assert parent_of(load) == request.get_span_context().span_id
    assert attributes(
        load,
        "messaging.system",
        "messaging.destination.name",
        "messaging.operation.type",
        "angzarr_es.from_sequence",
        "angzarr_es.events",
        "angzarr_es.next_sequence",
    ) == {
        "messaging.system": "nats",
        "messaging.destination.name": store.subject("loaded"),
        "messaging.operation.type": "receive",
        "angzarr_es.from_sequence": 1,
        "angzarr_es.events": 2,
        "angzarr_es.next_sequence": 3,
    }


async def test_a_failed_append_and_a_failed_handler_are_errors_on_their_spans(
    client: angzarr_es.Client, spans: InMemorySpanExporter
) -> None:
    store = client.store("player")
    with otel.ROOT.start_as_current_span("request"):
        await store.append("f", [player_pb2.FundsDeposited()], expected=0)
        with pytest.raises(angzarr_es.ConcurrencyError):
            await store.append("f", [player_pb2.FundsDeposited()], expected=0)
    first, refused = otel.span_named("append player")
    assert refused.status.status_code is StatusCode.ERROR
    assert [e.name for e in refused.events] == ["exception"]

    async def flaky(d: angzarr_es.Delivery) -> None:
        if d.delivery_count == 1:
            raise ValueError("not yet")

    async with client.projector("flaky", filters.domain("player"), flaky, backoff=(0.01,)) as p:
        await p.wait(lambda s: s.handled == 1, timeout=20)
    failed, retried = otel.span_named("process player")
    assert failed.status.status_code is StatusCode.ERROR
    assert retried.status.status_code is StatusCode.UNSET
    assert [attributes(s, "angzarr_es.delivery_count") for s in (failed, retried)] == [
        {"angzarr_es.delivery_count": 1},
        {"angzarr_es.delivery_count": 2},
    ]
    assert first.context is not None
    assert parent_of(failed) == parent_of(retried) == first.context.span_id


async def test_trace_headers_go_through_the_global_propagator(
    client: angzarr_es.Client, spans: InMemorySpanExporter
) -> None:
    """The default global propagator also carries baggage: set around the
    append, current again in the handler."""
    token = otel_context.attach(baggage.set_baggage("tenant", "t1"))
    try:
        with otel.ROOT.start_as_current_span("request"):
            await client.store("player").append("b", [player_pb2.FundsDeposited()], expected=0)
    finally:
        otel_context.detach(token)
    seen: list[object] = []

    async def handler(d: angzarr_es.Delivery) -> None:
        seen.append((d.headers.get("baggage"), baggage.get_baggage("tenant")))

    async with client.projector("bag", filters.domain("player"), handler) as p:
        await p.wait(lambda s: s.handled == 1, timeout=20)
    assert seen == [("tenant=t1", "t1")]


async def test_long_tracestate_and_baggage_stay_out_of_commits(
    client: angzarr_es.Client, spans: InMemorySpanExporter
) -> None:
    state = ",".join(f"k{i}={'v' * 200}" for i in range(3))  # 3 valid members, > 512
    long = tracing.TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", state=state)
    token = otel_context.attach(baggage.set_baggage("big", "x" * 600))
    try:
        with tracing.use(long):
            await client.store("player").append("long", [player_pb2.FundsDeposited()], expected=0)
    finally:
        otel_context.detach(token)
    headers = await stored_headers(client, "player", "long")
    assert "tracestate" not in headers
    assert "baggage" not in headers
    carried = tracing.TraceContext.parse(headers["traceparent"])
    assert carried is not None
    assert carried.trace_id == long.trace_id


async def test_metrics_add_no_second_trace_header(
    client: angzarr_es.Client, spans: InMemorySpanExporter
) -> None:
    metrics.instrument(client, metrics.StoreMetrics(prom.CollectorRegistry()))
    with otel.ROOT.start_as_current_span("request"):
        await client.store("player").append("m", [player_pb2.FundsDeposited()], expected=0)
    (append,) = otel.span_named("append player")
    assert append.context is not None
    async with client.subscribe(filters.aggregate("player", "m")) as sub:
        delivery = await asyncio.wait_for(anext(sub), 20)
    carried = tracing.TraceContext.parse(delivery.headers["traceparent"])
    assert carried is not None
    assert carried.span_id == f"{append.context.span_id:016x}"


async def test_an_instrumented_commit_outside_a_trace_leaves_long_baggage_out(
    client: angzarr_es.Client,
) -> None:
    """No tracer provider and no trace: the instrumented client writes the
    traceparent of a new trace through the same writer, so a baggage past
    512 characters stays out of the commit."""
    metrics.instrument(client, metrics.StoreMetrics(prom.CollectorRegistry()))
    token = otel_context.attach(baggage.set_baggage("big", "x" * 600))
    try:
        await client.store("player").append("big", [player_pb2.FundsDeposited()], expected=0)
    finally:
        otel_context.detach(token)
    headers = await stored_headers(client, "player", "big")
    assert tracing.TraceContext.parse(headers["traceparent"]) is not None
    assert "baggage" not in headers


def _child_env(**extra: str) -> dict[str, str]:
    """This environment for a child process: this checkout first on its path,
    then the caller's path (where opentelemetry may be installed)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def test_the_docs_example_runs(nats_url: str, tmp_path: Path) -> None:
    """docs/operations.md's program: the handler runs in the order's trace,
    and the console exporter prints the three spans."""
    docs = (ROOT / "docs" / "operations.md").read_text()
    section = docs[docs.index("## Tracing") :]
    section = section[: section.index("\n## ", 1)]
    (example,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    script = tmp_path / "traced.py"
    script.write_text(example)
    done = subprocess.run(
        [sys.executable, str(script)],
        env=_child_env(NATS_URL=nats_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    order = re.findall(r"^order in trace (\w+)$", done.stdout, flags=re.M)
    assert order == re.findall(r"^receipt in trace (\w+)$", done.stdout, flags=re.M)
    assert len(order) == 1
    for name in ("place order", "append player", "process player"):
        assert f'"name": "{name}"' in done.stdout


def _passed_in_a_fresh_process(nats_url: str, *plugins: str) -> set[str]:
    """The tests of test_trace_modes.py that pass in a new pytest process."""
    env = _child_env(ANGZARR_TEST_NATS_URL=nats_url)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-n", "0", "-p", "no:cacheprovider", *plugins,
         "tests/integration/test_trace_modes.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return {
        line.split("::")[1].split()[0] for line in done.stdout.splitlines() if " PASSED" in line
    }


def test_each_mode_in_a_fresh_process(nats_url: str) -> None:
    """Without the package: the hand-made headers, exactly as before. With it
    and no tracer provider: nothing recorded, the caller's context carried on.
    With a global tracer provider: the library's spans go to it."""
    assert _passed_in_a_fresh_process(nats_url, "-p", "tests.support.no_otel") == {
        "test_the_package_is_missing",
        "test_a_tracer_provider_needs_the_package",
        "test_uninstrumented_commits_carry_no_trace",
        "test_an_instrumented_commit_carries_a_new_span_of_the_current_trace",
        "test_angzarrs_consumer_reads_the_hand_made_headers",
        "test_a_trace_angzarr_publishes_continues_in_a_hand_made_handler",
    }
    assert _passed_in_a_fresh_process(nats_url) == {
        "test_angzarrs_consumer_continues_the_callers_trace",
        "test_without_a_trace_nothing_is_written",
        "test_the_current_context_is_carried_on_unchanged",
        "test_an_untraced_append_asks_no_tracer_and_no_propagator",
    }
    assert _passed_in_a_fresh_process(nats_url, "-p", "tests.support.otel") == {
        "test_spans_go_to_the_global_tracer_provider",
    }


async def wait_for(ready: Any, timeout: float = 10.0) -> None:
    """Until `ready()` is truthy (spans end just after the handler returns)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not ready():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)
