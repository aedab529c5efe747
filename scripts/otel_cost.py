"""What OpenTelemetry adds to an append, a load and a handler call.

    python scripts/otel_cost.py [calls]
    python scripts/otel_cost.py appends [count]

In process, no server: the library's wrappers (`_otel.traced_append`, the
writer of a commit's trace headers, the consumer span around a handler)
around work that takes no time, against the same work bare, per call in
microseconds. First with the API alone (no tracer provider; outside any
trace, then inside one), then with the SDK's provider, every span sampled
and handed to an exporter that drops it.

`appends`: single-event appends to new aggregates on an embedded
nats-server, interleaved one each in three modes (as without the package,
`_otel.ENABLED` false; the API with no provider; the SDK recording, inside a
caller's span), p50 and p90 in microseconds.

Needs opentelemetry-api and opentelemetry-sdk. Without the package the
library calls none of this. docs/operations.md (*Tracing*) quotes a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import angzarr_es
from angzarr_es import _otel
from angzarr_es._types import AppendResult
from angzarr_es.embedded import EmbeddedServer
from angzarr_es.pb import player_pb2

RESULT = AppendResult(first_sequence=0, next_sequence=1, stream_sequence=1)
CARRIED = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


class Dropped(SpanExporter):  # type: ignore[misc, unused-ignore]  # Any without the SDK
    """Takes every span and keeps none."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


async def done() -> AppendResult:
    return RESULT


def subject(root: object) -> str:
    return f"p.events.player.{root}"


async def per_call(work: Callable[[], Awaitable[object]], calls: int) -> float:
    """Microseconds per call of `work`, best of five runs."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            await work()
        best = min(best, time.perf_counter() - started)
    return best / calls * 1e6


async def append() -> AppendResult:
    return await _otel.traced_append(done(), "player", "", "p-1", subject, 0, "")


async def commit_headers() -> None:
    _otel.inject({})


async def handler_call() -> None:
    with _otel.processing("process player", CARRIED, dict):
        await done()


async def measure(label: str, calls: int) -> None:
    bare = await per_call(done, calls)
    costs = [await per_call(w, calls) for w in (append, commit_headers, handler_call)]
    print(
        f"{label:<34} append wrapper {costs[0] - bare:6.1f}  headers {costs[1]:5.1f}"
        f"  handler span {costs[2] - bare:6.1f}   (bare call {bare:.2f})"
    )


async def main(calls: int) -> None:
    await measure("API, no provider, no trace", calls)
    parent = trace.NonRecordingSpan(
        trace.SpanContext(1, 1, is_remote=False, trace_flags=trace.TraceFlags(1))
    )
    with trace.use_span(parent):
        await measure("API, no provider, in a trace", calls)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Dropped()))
    trace.set_tracer_provider(provider)
    with provider.get_tracer("caller").start_as_current_span("request"):
        await measure("SDK, sampled, spans dropped", calls)


async def appends(count: int) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Dropped()))
    api, sdk = _otel._tracer, provider.get_tracer("angzarr_es")
    modes = {"without the package": (False, api), "API, no provider": (True, api)}
    modes["SDK, sampled, spans dropped"] = (True, sdk)
    took: dict[str, list[float]] = {mode: [] for mode in modes}
    event = [player_pb2.FundsDeposited(amount_cents=1)]
    with EmbeddedServer() as server:
        async with await angzarr_es.connect(server.url) as client:
            await client.provision()
            store = client.store("player")
            for i in range(count + 100):  # the first 100 rounds warm up
                for mode, (enabled, tracer) in modes.items():
                    _otel.ENABLED, _otel._tracer = enabled, tracer
                    span = provider.get_tracer("caller").start_as_current_span("request")
                    with span if tracer is sdk else contextlib.nullcontext():
                        started = time.perf_counter()
                        await store.append(uuid.uuid4(), event, expected=0)
                        if i >= 100:
                            took[mode].append((time.perf_counter() - started) * 1e6)
    for mode, times in took.items():
        cuts = statistics.quantiles(times, n=10)
        print(f"{mode:<30} p50 {cuts[4]:7.0f}  p90 {cuts[8]:7.0f}  ({len(times)} appends)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["appends"]:
        print("microseconds per append, modes interleaved")
        asyncio.run(appends(int(sys.argv[2]) if len(sys.argv) > 2 else 2000))
    else:
        print("microseconds per call, above the same work done bare")
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
