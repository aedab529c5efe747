"""The trace context angzarr's NATS bus writes and reads, for `angzarr_bus`.

Written from angzarr-io/angzarr f97af362 and the crates it locks
(opentelemetry 0.31, opentelemetry_sdk 0.31, async-nats 0.38):

- `src/utils/bootstrap.rs` installs one global propagator, the SDK's
  `TraceContextPropagator`: W3C `traceparent` and `tracestate` only (no
  baggage).
- Publishing (`bus.rs` -> `otel.rs` `nats_inject_trace_context`): with a
  valid current span, `traceparent` = `00-<trace id>-<span id>-<flags & 1>`
  and `tracestate` = the span's trace state, written even when empty.
- Consuming (`consumer.rs`): after the `EventBook` decodes, a `bus.consume`
  span whose parent is extracted from the message's headers when it has any
  (`otel.rs` `NatsExtractor`: a header by its exact name, since async-nats's
  `HeaderMap` keys are case-sensitive). The propagator takes `traceparent`,
  trimmed, split at `-` (one trailing empty part dropped), and refuses: fewer
  than 4 parts; a version that is not a hex byte, above 254, or 0 with other
  than 4 parts; an upper-case letter in the trace or span id; ids that are not
  hex numbers of at most 128 and 64 bits; flags that are not a hex byte, or
  above 2 in version 0; a zero trace or span id. It keeps only the sampled
  bit of the flags, and a `tracestate` it cannot parse becomes an empty one
  (this module keeps the header's text: no test sends an invalid one).

`parent(headers)` is that extraction: the span context `bus.consume` gets as
its parent, or None where angzarr's consumer starts a new trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

__all__ = ["TRACEPARENT", "TRACESTATE", "Trace", "headers", "parent"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_MAX_VERSION = 254


class Trace(NamedTuple):
    """A span context as angzarr's propagator carries it."""

    trace_id: str
    """32 lower-case hex digits."""
    span_id: str
    """16 lower-case hex digits."""
    sampled: bool = True
    state: str = ""


def headers(trace: Trace) -> dict[str, str]:
    """The headers angzarr's publish writes for `trace` as the current span."""
    flags = "01" if trace.sampled else "00"
    return {
        TRACEPARENT: f"00-{trace.trace_id}-{trace.span_id}-{flags}",
        TRACESTATE: trace.state,
    }


def _number(text: str, bits: int) -> int | None:
    """`text` as a hex number of at most `bits` bits (Rust's from_str_radix)."""
    digits = text[1:] if text.startswith("+") else text
    if not digits or any(c not in "0123456789abcdefABCDEF" for c in digits):
        return None
    value = int(digits, 16)
    return value if value < 1 << bits else None


def parent(carried: Mapping[str, str] | None) -> Trace | None:
    """The parent angzarr's consumer gives its `bus.consume` span, if any."""
    if not carried:
        return None
    parts = carried.get(TRACEPARENT, "").strip().split("-")
    if parts[-1] == "":
        parts.pop()  # split_terminator
    if len(parts) < 4:
        return None
    version = _number(parts[0], 8)
    if version is None or version > _MAX_VERSION or (version == 0 and len(parts) != 4):
        return None
    if any(c.isupper() for c in parts[1] + parts[2]):
        return None
    trace_id, span_id, flags = _number(parts[1], 128), _number(parts[2], 64), _number(parts[3], 8)
    if trace_id is None or span_id is None or flags is None:
        return None
    if (version == 0 and flags > 2) or not trace_id or not span_id:
        return None
    return Trace(
        f"{trace_id:032x}", f"{span_id:016x}", bool(flags & 1), carried.get(TRACESTATE, "")
    )
