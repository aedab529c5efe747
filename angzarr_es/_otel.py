"""OpenTelemetry, when `opentelemetry-api` is installed (the `otel` extra).

`ENABLED` says whether it is. Then the store and the bus make spans through
the global tracer provider (`traced` around an append or a load, `processing`
around a handler call) and write and read trace headers through the global
propagator (`inject`, and `propagate.extract` in `processing`), as angzarr's
own bus does (`src/bus/nats/otel.rs`). Without a tracer provider the API's
no-op tracer answers: a span that records nothing and carries the caller's
context on, so a commit carries the trace that was current (if any).

Without the package nothing here is called (`angzarr_es.tracing` keeps its
hand-made W3C headers).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

from angzarr_es._types import ANY, AppendResult, ExpectedVersion, History
from angzarr_es.errors import AngzarrESError
from angzarr_es.subjects import AggregateId

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover - depends on the environment
    ENABLED = False
else:
    ENABLED = True
    _tracer = trace.get_tracer("angzarr_es")
    # The propagator OpenTelemetry set up from OTEL_PROPAGATORS (W3C trace
    # context and baggage by default): none of the standard ones writes
    # anything for an empty context. One the application sets is asked always.
    _STANDARD_TEXTMAP = propagate.get_global_textmap()

# Whether `use_provider` gave the library a provider of its own.
_own_provider = False


def active() -> bool:
    """Whether a span of the library's could record: a tracer provider is set
    (the global one, or the library's own). Without one a span is a no-op, so
    appends and loads skip it (measured: 64 concurrent writers lost about a
    fifth of their throughput to no-op spans and propagation)."""
    return _own_provider or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


__all__ = [
    "ENABLED",
    "attributes",
    "inject",
    "otel_context",
    "processing",
    "propagate",
    "trace",
    "traced",
    "traced_append",
    "traced_load",
    "use_provider",
]

T = TypeVar("T")


def use_provider(provider: Any) -> None:
    """Make the library's spans with `provider`'s tracer (None: the global provider's).

    Raises:
        RuntimeError: opentelemetry is not installed.
    """
    if not ENABLED:
        raise RuntimeError("a tracer provider needs opentelemetry: pip install 'angzarr-es[otel]'")
    global _tracer, _own_provider
    _tracer = (trace if provider is None else provider).get_tracer("angzarr_es")
    _own_provider = provider is not None


Attributes = dict[str, str | int | bool]

# Messaging semantic conventions (https://opentelemetry.io/docs/specs/semconv/messaging/).
SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
CONVERSATION = "messaging.message.conversation_id"
MESSAGE_ID = "messaging.message.id"
CONSUMER_GROUP = "messaging.consumer.group.name"
NATS = "nats"
# Trace headers whose length a caller decides, and the most of each a commit keeps
# (W3C caps a useful tracestate at 512 characters; angzarr_es.tracing does the same).
BOUNDED = ("tracestate", "baggage")
MAX_VALUE = 512
TRACEPARENT = "traceparent"
# A version-00 traceparent: version, trace id, span id, flags (W3C).
_V00 = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-([0-9a-f]{2})")


def attributes(
    operation: str, kind: str, destination: str, domain: str, root: str, edition: str
) -> Attributes:
    """The attributes every span of the store and the bus has: `operation` is
    the operation's name (`append`, `load`, `process`), `kind` its type."""
    attrs: Attributes = {
        SYSTEM: NATS,
        DESTINATION: destination,
        OPERATION_TYPE: kind,
        OPERATION_NAME: operation,
        "angzarr_es.domain": domain,
        "angzarr_es.root": root,
    }
    if edition:
        attrs["angzarr_es.edition"] = edition
    return attrs


def _destination(subject: Callable[[AggregateId], str], root: AggregateId) -> str:
    """The aggregate's subject, or "" for a root the call itself will refuse."""
    try:
        return subject(root)
    except (AngzarrESError, TypeError, ValueError):
        return ""


def traced_append(
    call: Coroutine[Any, Any, AppendResult],
    domain: str,
    edition: str,
    root: AggregateId,
    subject: Callable[[AggregateId], str],
    expected: ExpectedVersion,
    correlation_id: str,
) -> Coroutine[Any, Any, AppendResult]:
    """`call` (one append) in a producer span, its context the commit's;
    `call` itself when no span could record (`active`)."""
    if not active():
        return call

    def before() -> Attributes:
        attrs = attributes(
            "append", "send", _destination(subject, root), domain, str(root), edition
        )
        attrs["angzarr_es.expected"] = "any" if expected is ANY else expected
        if correlation_id:
            attrs[CONVERSATION] = correlation_id
        return attrs

    def after(result: AppendResult) -> Attributes:
        return {
            "angzarr_es.first_sequence": result.first_sequence,
            "angzarr_es.next_sequence": result.next_sequence,
            "angzarr_es.stream_sequence": result.stream_sequence,
            "angzarr_es.duplicate": result.duplicate,
        }

    return traced(call, f"append {domain}", trace.SpanKind.PRODUCER, before, after)


def traced_load(
    call: Coroutine[Any, Any, History],
    domain: str,
    edition: str,
    root: AggregateId,
    subject: Callable[[AggregateId], str],
    from_sequence: int,
    to_sequence: int | None,
) -> Coroutine[Any, Any, History]:
    """`call` (one load) in a client span; `call` itself when no span could
    record (`active`)."""
    if not active():
        return call

    def before() -> Attributes:
        attrs = attributes(
            "load", "receive", _destination(subject, root), domain, str(root), edition
        )
        attrs["angzarr_es.from_sequence"] = from_sequence
        if to_sequence is not None:
            attrs["angzarr_es.to_sequence"] = to_sequence
        return attrs

    def after(history: History) -> Attributes:
        return {
            "angzarr_es.events": len(history.events),
            "angzarr_es.next_sequence": history.next_sequence,
        }

    return traced(call, f"load {domain}", trace.SpanKind.CLIENT, before, after)


async def traced(
    call: Awaitable[T],
    name: str,
    kind: trace.SpanKind,
    before: Callable[[], Attributes],
    after: Callable[[T], Attributes],
) -> T:
    """Await `call` inside a span of its own; attributes only when it records.

    A span that records nothing and is the caller's own (the no-op tracer
    passing the current context on) is not made current: `call` runs in the
    caller's context, which is the same, and the cost stays two look-ups.
    """
    span = _tracer.start_span(name, kind=kind)
    recording = span.is_recording()
    if not recording and span is trace.get_current_span():
        return await call
    if recording:
        span.set_attributes(before())
    with trace.use_span(span, end_on_exit=True):
        result = await call
        if recording:
            span.set_attributes(after(result))
        return result


def inject(headers: dict[str, str], context: otel_context.Context | None = None) -> None:
    """Write `context` (default: the current one) into a commit's headers,
    through the global propagator (W3C `traceparent`/`tracestate`, and
    `baggage`, by default). No `traceparent` when there is no trace.

    The `traceparent` keeps only the sampled flag, as angzarr's bus writes
    it: the Python SDK also sets W3C level 2's random-trace-id flag (`03`),
    and the propagator of angzarr's Rust SDK (opentelemetry_sdk 0.31)
    refuses version-00 flags above `02`, so its consumers would start a new
    trace. A `tracestate` or `baggage` longer than `MAX_VALUE` characters is
    dropped: every commit stores its headers, and the store allows a commit
    1 KiB of them against the server's max_payload.

    An empty current context under the standard propagator writes nothing,
    so it is not asked (most appends, when nothing is traced)."""
    if (
        context is None
        and not otel_context.get_current()
        and propagate.get_global_textmap() is _STANDARD_TEXTMAP
    ):
        return
    propagate.inject(headers, context)
    parent = _V00.fullmatch(headers.get(TRACEPARENT, ""))
    if parent is not None and parent[1] not in ("00", "01"):
        sampled = int(parent[1], 16) & 1
        headers[TRACEPARENT] = f"{parent.string[:-2]}0{sampled}"
    for name in BOUNDED:
        if len(headers.get(name, "")) > MAX_VALUE:
            del headers[name]


@contextlib.contextmanager
def processing(
    name: str, headers: Mapping[str, str], describe: Callable[[], Attributes]
) -> Iterator[None]:
    """A consumer span around one handler call, a child of the context the
    message carries (read through the global propagator; a new trace when it
    carries none). The message's baggage is current inside too."""
    parent = propagate.extract(headers) if headers else otel_context.Context()
    span = _tracer.start_span(name, context=parent, kind=trace.SpanKind.CONSUMER)
    if span.is_recording():
        span.set_attributes(describe())
    token = otel_context.attach(parent)
    try:
        with trace.use_span(span, end_on_exit=True):
            yield
    finally:
        otel_context.detach(token)
