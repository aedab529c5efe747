"""Trace context on commits: OpenTelemetry when it is installed, W3C headers by hand when not.

    with tracing.span():                       # or tracing.continue_from(headers)
        await store.append(pid, events, expected=n)   # commit carries this trace

**With `opentelemetry-api` installed** (`pip install 'angzarr-es[otel]'`;
`OTEL` is True) the store and the bus use OpenTelemetry, as angzarr's own
bus does: every commit carries the trace context the global propagator
writes for the append's span (W3C `traceparent`/`tracestate` by default, and
`baggage` when there is some; the flags only the sampled bit, which is what
angzarr's consumers accept), and the library makes spans through the
global tracer provider: `append <domain>` (producer), `load <domain>`
(client), and `process <domain>` (consumer) around each projector or
subscription handler call, a child of the context the commit carries, with
the messaging attributes (`messaging.system = "nats"`,
`messaging.destination.name` = the subject, ...; docs/operations.md,
*Tracing*). Without a tracer provider nothing is recorded and the context
current at the append (if any) is carried on. The functions below then work
on OpenTelemetry's current context: `current()` reads the current span's,
`use()`, `span()` and `continue_from()` set it, `inject()` and `extract()` go
through the global propagator.

**Without it** nothing changes from before: with metrics switched on
(`angzarr_es.metrics.instrument`), every commit carries a `traceparent`
header naming the current trace (a new trace when there is none) and a
fresh span id for the publish, and a projector runs each handler call in
the trace its commit carries (`continue_from(headers)`).
See https://www.w3.org/TR/trace-context/.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

import msgspec

from angzarr_es import _otel

__all__ = [
    "HEADER",
    "OTEL",
    "TraceContext",
    "continue_from",
    "current",
    "extract",
    "inject",
    "set_tracer_provider",
    "span",
    "use",
]

HEADER = "traceparent"


def set_tracer_provider(provider: object) -> None:
    """Make the library's spans with `provider` (an OpenTelemetry
    `TracerProvider`) instead of the global one; None goes back to the
    global provider. As OpenTelemetry instrumentations take a
    `tracer_provider`: for a test that records spans, or an application with
    a provider of its own for this library.

    Raises:
        RuntimeError: opentelemetry is not installed.
    """
    _otel.use_provider(provider)


OTEL = _otel.ENABLED
"""Whether OpenTelemetry carries the trace context (`opentelemetry-api` is installed)."""
STATE_HEADER = "tracestate"
MAX_STATE = 512
_FORMAT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


class TraceContext(msgspec.Struct, frozen=True):
    """One span's identity within a trace."""

    trace_id: str
    """32 lowercase hex digits, not all zero."""
    span_id: str
    """16 lowercase hex digits, not all zero."""
    sampled: bool = True
    state: str = ""
    """The vendor `tracestate` header, passed along untouched."""

    @classmethod
    def new(cls) -> TraceContext:
        """The root span of a new trace."""
        return cls(secrets.token_hex(16), secrets.token_hex(8))

    def child(self) -> TraceContext:
        """A new span in the same trace."""
        return msgspec.structs.replace(self, span_id=secrets.token_hex(8))

    @property
    def traceparent(self) -> str:
        """The `traceparent` header value."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    @classmethod
    def parse(cls, header: str, state: str = "") -> TraceContext | None:
        """The context in a `traceparent` value, or None if it is not a valid one."""
        m = _FORMAT.fullmatch(header.strip().lower())
        if m is None:
            return None
        version, trace_id, span_id, flags, rest = m.groups()
        if version == "ff" or (version == "00" and rest):
            return None
        if trace_id == "0" * 32 or span_id == "0" * 16:
            return None
        return cls(trace_id, span_id, sampled=bool(int(flags, 16) & 1), state=state)


_current: ContextVar[TraceContext | None] = ContextVar("angzarr_es_trace", default=None)


def current() -> TraceContext | None:
    """The trace context of the running task, if any."""
    if OTEL:
        return _from_otel(_otel.trace.get_current_span().get_span_context())
    return _current.get()


@contextlib.contextmanager
def use(context: TraceContext | None) -> Iterator[TraceContext | None]:
    """Make `context` current inside the block."""
    if OTEL:
        span = _otel.trace.INVALID_SPAN if context is None else _otel_span(context)
        token = _otel.otel_context.attach(_otel.trace.set_span_in_context(span))
        try:
            yield context
        finally:
            _otel.otel_context.detach(token)
        return
    reset = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(reset)


@contextlib.contextmanager
def span() -> Iterator[TraceContext]:
    """A child of the current span (or a new trace) for the duration of the block."""
    parent = current()
    context = parent.child() if parent is not None else TraceContext.new()
    with use(context):
        yield context


def extract(headers: Mapping[str, str] | None) -> TraceContext | None:
    """The trace context a message carries, if any (invalid headers are ignored)."""
    if not headers:
        return None
    if OTEL:
        carried = _otel.propagate.extract(headers)
        return _from_otel(_otel.trace.get_current_span(carried).get_span_context())
    if HEADER not in headers:
        return None
    return TraceContext.parse(headers[HEADER], headers.get(STATE_HEADER, ""))


@contextlib.contextmanager
def continue_from(headers: Mapping[str, str] | None) -> Iterator[TraceContext]:
    """Handle a message inside the trace it carries (a new trace if none)."""
    if not OTEL:
        parent = extract(headers)
        context = parent.child() if parent is not None else TraceContext.new()
        with use(context):
            yield context
        return
    # The whole carried context (its baggage too) with a span of our own in it.
    carried = _otel.propagate.extract(headers) if headers else _otel.otel_context.Context()
    parent = _from_otel(_otel.trace.get_current_span(carried).get_span_context())
    context = parent.child() if parent is not None else TraceContext.new()
    token = _otel.otel_context.attach(_otel.trace.set_span_in_context(_otel_span(context), carried))
    try:
        yield context
    finally:
        _otel.otel_context.detach(token)


def inject(headers: dict[str, str]) -> TraceContext:
    """Add `traceparent` (and `tracestate`) for a publish: a new span in the current
    trace, or in a new trace when there is none. Returns the context sent."""
    parent = current()
    sent = parent.child() if parent is not None else TraceContext.new()
    if OTEL:
        _otel.inject(headers, _otel.trace.set_span_in_context(_otel_span(sent)))
        return sent
    headers[HEADER] = sent.traceparent
    # W3C caps a useful tracestate at 512 characters; a longer one (from an
    # untrusted caller) is dropped rather than allowed to bloat every commit.
    if sent.state and len(sent.state) <= MAX_STATE:
        headers[STATE_HEADER] = sent.state
    return sent


def _otel_span(context: TraceContext) -> _otel.trace.Span:
    """`context` as an OpenTelemetry span that records nothing."""
    t = _otel.trace
    flags = t.TraceFlags(t.TraceFlags.SAMPLED if context.sampled else t.TraceFlags.DEFAULT)
    state = t.TraceState.from_header([context.state]) if context.state else t.TraceState()
    return t.NonRecordingSpan(
        t.SpanContext(
            int(context.trace_id, 16),
            int(context.span_id, 16),
            is_remote=False,
            trace_flags=flags,
            trace_state=state,
        )
    )


def _from_otel(found: _otel.trace.SpanContext) -> TraceContext | None:
    """An OpenTelemetry span context as a TraceContext (None when invalid)."""
    if not found.is_valid:
        return None
    return TraceContext(
        _otel.trace.format_trace_id(found.trace_id),
        _otel.trace.format_span_id(found.span_id),
        sampled=found.trace_flags.sampled,
        state=found.trace_state.to_header(),
    )
