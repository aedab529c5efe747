"""What the bus hands over: one decoded commit, and where reading starts.

Shared by both sides of the bus: subscriptions (core and catch-up) and
durable projectors.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import inspect
import uuid
from collections.abc import Awaitable, Callable
from typing import Literal

import msgspec

from angzarr_es import _codec, _otel
from angzarr_es._codec import RecordedEvent
from angzarr_es.errors import AngzarrESError, InvalidAggregateId
from angzarr_es.pb import core_pb2
from angzarr_es.subjects import MAIN_EDITION, parse_subject

__all__ = [
    "Delivery",
    "Handler",
    "SkipHandler",
    "Start",
    "check_handler",
    "check_skip_handler",
    "decode_delivery",
    "handling",
    "root_of",
    "start_config",
]

Start = Literal["all", "new"] | int | dt.datetime
"""Where reading starts: every commit, only new ones, a stream sequence, or a time."""


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One commit handed to a subscriber or projector."""

    subject: str
    domain: str
    root: str
    """The aggregate id (a UUID in its canonical text form)."""
    book: core_pb2.EventBook
    """The commit as stored: cover and the new pages."""
    events: list[RecordedEvent]
    """The book's pages, decoded."""
    stream_sequence: int = 0
    """JetStream stream sequence (0 in core mode)."""
    delivery_count: int = 0
    """1 on first delivery, more on redelivery (0 when there is no consumer)."""
    edition: str = ""
    """The edition (what-if timeline) the commit belongs to; "" for the main
    timeline. `filters.everything()` and `domain(..., deep=True)` match both."""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    """The commit's NATS headers (e.g. `traceparent`, for
    `tracing.continue_from`); in core mode those the publisher sent
    (`bus.publish` sends none)."""


Handler = Callable[[Delivery], Awaitable[None]]

SkipHandler = Callable[[str, int, AngzarrESError], None]
"""Told of a message on a subscription's subjects that is not a commit and was
passed over: (subject, stream sequence or 0 in core mode, the decoding error)."""


def _is_async(fn: object) -> bool:
    """Whether calling `fn` runs a coroutine function: an `async def`, a
    `functools.partial` of one, or an object whose `__call__` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the method itself is inspected
    )


def check_handler(handler: object, what: str = "handler") -> None:
    """Refuse a handler that is not an async function, before anything runs.

    A plain `def` handler returns None, which fails on `await` at every
    delivery: a projector would retry it and dead-letter every commit.

    Raises:
        TypeError: `handler` is not callable, or not `async def` (nor an
            object with an `async def __call__`).
    """
    if not callable(handler):
        raise TypeError(f"{what} must be an async function, got {handler!r}")
    if not _is_async(handler):
        raise TypeError(
            f"{what} {handler!r} is not a coroutine function: define it with "
            "`async def handler(delivery): ...` (a plain function's result cannot be "
            "awaited, so every delivery would fail)"
        )


def check_skip_handler(on_skip: object) -> None:
    """Refuse an `on_skip` that cannot be called synchronously.

    Raises:
        TypeError: not callable, or an `async def` (it would never run).
    """
    if on_skip is None:
        return
    if not callable(on_skip) or _is_async(on_skip):
        raise TypeError(
            f"on_skip must be a plain function (it is called, not awaited), got {on_skip!r}"
        )


def decode_delivery(
    prefix: str,
    subject: str,
    data: bytes,
    *,
    stream_sequence: int = 0,
    delivery_count: int = 0,
    headers: dict[str, str] | None = None,
) -> Delivery:
    """Decode a bus message.

    Raises:
        CodecError: the payload is not an EventBook or an event does not parse.
        InvalidAggregateId: `subject` is not an aggregate subject under `prefix`.
    """
    domain, root = parse_subject(prefix, subject)
    book = _codec.decode_book(data, subject=subject, stream_sequence=stream_sequence)
    return Delivery(
        subject=subject,
        domain=domain,
        root=root,
        book=book,
        events=_codec.recorded(book, subject=subject),
        stream_sequence=stream_sequence,
        delivery_count=delivery_count,
        edition=_edition(book.cover.edition.name),
        headers=headers if headers is not None else {},
    )


def _edition(name: str) -> str:
    """The edition of a commit ("" for the main timeline, which angzarr names "angzarr")."""
    return "" if name == MAIN_EDITION else name


def start_config(start: Start) -> dict[str, object]:
    """Consumer settings for `start`.

    Raises:
        ValueError, TypeError: an unknown start.
    """
    if start == "all":
        return {"deliver_policy": "all"}
    if start == "new":
        return {"deliver_policy": "new"}
    if isinstance(start, bool) or not isinstance(start, int | dt.datetime):
        raise TypeError(f"start must be 'all', 'new', a stream sequence or a datetime: {start!r}")
    if isinstance(start, int):
        if start < 1:
            raise ValueError(f"a start stream sequence must be >= 1, got {start}")
        return {"deliver_policy": "by_start_sequence", "opt_start_seq": start}
    if start.tzinfo is None:
        raise ValueError("a start time must be timezone-aware")
    stamp = start.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return {"deliver_policy": "by_start_time", "opt_start_time": stamp}


def root_of(cover: core_pb2.Cover) -> str:
    """The aggregate id in a cover: 16 bytes read as a UUID, unless all are
    ASCII (a 16-character text id: no RFC 9562 UUID is, its variant byte has
    the top bit set), anything else as UTF-8. A 16-byte id of non-ASCII text
    reads as a UUID: `bus.publish(book, root=...)` names it.

    Raises:
        InvalidAggregateId: empty or not UTF-8.
    """
    raw = cover.root.value
    if len(raw) == 16 and not raw.isascii():
        return str(uuid.UUID(bytes=raw))
    try:
        text = raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise InvalidAggregateId("the cover's root is neither a UUID nor UTF-8") from exc
    if not text:
        raise InvalidAggregateId("the cover has no root")
    return text


def handling(delivery: Delivery, consumer: str = "") -> contextlib.AbstractContextManager[None]:
    """With OpenTelemetry (only then: check `_otel.ENABLED`), the consumer span
    around one handler call: a child of the context the commit carries.
    `consumer` names the projector's durable consumer, if any."""
    return _otel.processing(
        f"process {delivery.domain}", delivery.headers, lambda: _span_attributes(delivery, consumer)
    )


def _span_attributes(d: Delivery, consumer: str) -> _otel.Attributes:
    attrs = _otel.attributes("process", "process", d.subject, d.domain, d.root, d.edition)
    if d.events:
        attrs["angzarr_es.first_sequence"] = d.events[0].sequence
        attrs["angzarr_es.next_sequence"] = d.events[-1].sequence + 1
    if d.book.cover.correlation_id:
        attrs[_otel.CONVERSATION] = d.book.cover.correlation_id
    if d.stream_sequence:
        attrs["angzarr_es.stream_sequence"] = d.stream_sequence
    if d.delivery_count:
        attrs["angzarr_es.delivery_count"] = d.delivery_count
    if consumer:
        attrs[_otel.CONSUMER_GROUP] = consumer
    message_id = d.headers.get("Nats-Msg-Id")
    if message_id:
        attrs[_otel.MESSAGE_ID] = message_id
    return attrs
