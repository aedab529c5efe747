"""W3C trace context (`traceparent`) carried in NATS message headers.

    with tracing.span():                       # or tracing.continue_from(headers)
        await store.append(pid, events, expected=n)   # commit carries `traceparent`

With metrics switched on (`angzarr_es.metrics.instrument`), every commit
carries a `traceparent` header naming the current trace (a new trace when
there is none) and a fresh span id for the publish, so a projector can
continue the same trace with `continue_from(headers)`. No dependency: if you
use OpenTelemetry, hand its ids to `TraceContext` and `use()` it.
See https://www.w3.org/TR/trace-context/.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

import msgspec

__all__ = ["HEADER", "TraceContext", "continue_from", "current", "extract", "inject", "span", "use"]

HEADER = "traceparent"
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
    return _current.get()


@contextlib.contextmanager
def use(context: TraceContext | None) -> Iterator[TraceContext | None]:
    """Make `context` current inside the block."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


@contextlib.contextmanager
def span() -> Iterator[TraceContext]:
    """A child of the current span (or a new trace) for the duration of the block."""
    parent = _current.get()
    context = parent.child() if parent is not None else TraceContext.new()
    with use(context):
        yield context


def extract(headers: Mapping[str, str] | None) -> TraceContext | None:
    """The trace context a message carries, if any (invalid headers are ignored)."""
    if not headers or HEADER not in headers:
        return None
    return TraceContext.parse(headers[HEADER], headers.get(STATE_HEADER, ""))


@contextlib.contextmanager
def continue_from(headers: Mapping[str, str] | None) -> Iterator[TraceContext]:
    """Handle a message inside the trace it carries (a new trace if none)."""
    parent = extract(headers)
    context = parent.child() if parent is not None else TraceContext.new()
    with use(context):
        yield context


def inject(headers: dict[str, str]) -> TraceContext:
    """Add `traceparent` (and `tracestate`) for a publish: a new span in the current
    trace, or in a new trace when there is none. Returns the context sent."""
    parent = _current.get()
    sent = parent.child() if parent is not None else TraceContext.new()
    headers[HEADER] = sent.traceparent
    # W3C caps a useful tracestate at 512 characters; a longer one (from an
    # untrusted caller) is dropped rather than allowed to bloat every commit.
    if sent.state and len(sent.state) <= MAX_STATE:
        headers[STATE_HEADER] = sent.state
    return sent
