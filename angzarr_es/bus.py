"""The event bus: commits as EventBooks on `<prefix>.events.<domain>.<root>`.

Two modes, chosen by `[bus.nats] jetstream`:

- JetStream (default): every committed `append` already is the bus event: the
  stream stores the EventBook message and NATS routes the same message to
  subscribers. There is no second write. Subscriptions and projectors read
  through consumers and see stream sequences and delivery counts.
- Core (`jetstream = false`): `bus.publish(book)` sends the EventBook with a
  plain NATS publish: at most once, lowest latency, no stream. Subscribers
  receive it only while connected. A core subscription sees every publish on
  its subjects, including an append the event stream then refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Literal

import msgspec

from angzarr_es import _nats as bw
from angzarr_es import codec
from angzarr_es._nats import Wire
from angzarr_es._nats import messages as m
from angzarr_es.codec import RecordedEvent
from angzarr_es.config import NatsConfig
from angzarr_es.errors import (
    AngzarrESError,
    ConfigError,
    InvalidAggregateId,
    PermissionDenied,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
)
from angzarr_es.filters import FilterLike, resolve
from angzarr_es.pb import core_pb2
from angzarr_es.subjects import (
    AggregateId,
    encode_root,
    parse_subject,
    validate_domain,
    validate_edition,
)

__all__ = ["Bus", "CatchUp", "Delivery", "Handler", "SkipHandler", "Start", "Subscription"]

log = logging.getLogger("angzarr_es")

# How long core mode trusts "no stream captures this domain's subjects" before
# `Bus.publish` asks the server again.
CAPTURE_CHECK_TTL = 10.0
# How long closing a subscription waits for its pump to see the reader closed.
PUMP_EXIT = 5.0

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
    book = codec.decode_book(data, subject=subject, stream_sequence=stream_sequence)
    return Delivery(
        subject=subject,
        domain=domain,
        root=root,
        book=book,
        events=codec.recorded(book, subject=subject),
        stream_sequence=stream_sequence,
        delivery_count=delivery_count,
        edition=book.cover.edition.name,
        headers=headers if headers is not None else {},
    )


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
    """The aggregate id in a cover: 16 bytes read as a UUID, anything else as UTF-8.

    Raises:
        InvalidAggregateId: empty or not UTF-8.
    """
    raw = cover.root.value
    if len(raw) == 16:
        return str(uuid.UUID(bytes=raw))
    try:
        text = raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise InvalidAggregateId("the cover's root is neither a UUID nor UTF-8") from exc
    if not text:
        raise InvalidAggregateId("the cover has no root")
    return text


class Subscription:
    """A running subscription; `close()` (or leaving `async with`) stops it."""

    def __init__(
        self, close: Callable[[], Awaitable[None]], forget: Callable[[], None] | None = None
    ) -> None:
        self._close = close
        self._forget = forget
        self._closed = False

    async def close(self) -> None:
        """Stop delivering; waits for the handler call in progress."""
        if not self._closed:
            self._closed = True
            try:
                await self._close()
            finally:
                if self._forget is not None:
                    self._forget()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Bus:
    """Publish and subscribe; obtain it as `client.bus`."""

    def __init__(self, wire: Wire, cfg: NatsConfig) -> None:
        self._wire = wire
        self._cfg = cfg
        self._prefix = cfg.subject_prefix
        self._uncaptured: dict[str, float] = {}  # domain -> loop time to ask again
        # Open subscriptions made here, for Client.close() (held: the caller
        # need not keep its Subscription for it to run).
        self.subscriptions: set[Subscription] = set()
        self._unchecked = False  # the account may not ask JetStream (warned once)

    @property
    def jetstream(self) -> bool:
        """Whether this bus runs on JetStream (else core NATS)."""
        return self._cfg.jetstream

    def subject(self, domain: str, root: AggregateId) -> str:
        """The subject an aggregate's commits travel on."""
        return f"{self._prefix}.events.{validate_domain(domain)}.{encode_root(root)}"

    def filter(self, f: FilterLike) -> str:
        """The NATS subject filter for `f` under this client's prefix."""
        return resolve(f, self._prefix)

    async def publish(self, book: core_pb2.EventBook, *, root: AggregateId | None = None) -> None:
        """Core mode: send `book` on its aggregate's subject, at most once.

        The subject comes from `book.cover` (domain, the root read as a UUID
        when it is 16 bytes, else UTF-8, and the edition's token for a what-if
        timeline); pass `root` to override the root.

        A stream capturing the subject (the event store's, provisioned in
        core mode too) would store the book as one more commit of the
        aggregate, which no load could then read: publish refuses, and it
        asks the server which streams capture the domain's subjects at most
        every CAPTURE_CHECK_TTL seconds per domain.

        Raises:
            ConfigError: the bus is in JetStream mode, where `append` publishes,
                or a stream captures the subject (every `append` to it already
                reaches core subscribers).
            TypeError: `book` is not an EventBook.
            InvalidDomain, InvalidAggregateId, InvalidEdition: the cover does
                not name an aggregate (or names a bad edition).
            StoreUnavailable: not connected.
        """
        if self._cfg.jetstream:
            raise ConfigError(
                "bus.publish() is for core mode ([bus.nats] jetstream = false); in "
                "JetStream mode every committed append is published by the stream"
            )
        if not isinstance(book, core_pb2.EventBook):
            raise TypeError(f"bus.publish takes an EventBook, got {type(book).__name__}")
        domain = book.cover.domain
        subject = self.subject(domain, root if root is not None else root_of(book.cover))
        edition = validate_edition(book.cover.edition.name)
        if edition:  # a what-if timeline's commits travel on their own subject
            subject = f"{subject}.{edition}"
        await self._refuse_captured(domain, subject)
        await self._wire.publish(subject, book.SerializeToString())

    async def _refuse_captured(self, domain: str, subject: str) -> None:
        now = asyncio.get_running_loop().time()
        if self._uncaptured.get(domain, 0.0) > now:
            return
        streams: list[str] = []
        try:
            streams = await self._wire.js.stream_names(f"{self._prefix}.events.{domain}.>")
        except StoreUnavailable as exc:
            if exc.code != 503:
                raise
            # No JetStream on the server: nothing can capture the subject.
        except PermissionDenied as exc:
            # An account allowed to publish but not to ask JetStream: the check
            # cannot be made here, and must not stop a core-only publisher.
            if not self._unchecked:
                log.warning("bus.publish cannot check for streams capturing its subjects: %s", exc)
            self._unchecked = True
        if streams:
            raise ConfigError(
                f"bus.publish() would store the book on {subject}, which stream "
                f"{', '.join(streams)} captures: it would become one more commit of the "
                "aggregate. Every append to that stream already reaches core subscribers; "
                "publish only books stored elsewhere, or use another subject_prefix"
            )
        self._uncaptured[domain] = now + CAPTURE_CHECK_TTL

    async def subscribe(
        self,
        f: FilterLike,
        handler: Handler,
        *,
        start: Start = "new",
        on_skip: SkipHandler | None = None,
    ) -> Subscription:
        """Call `handler` for every commit matching `f`, one at a time, in order.

        Core mode: a plain NATS subscription (`start` must be "new"). JetStream
        mode: an ephemeral consumer from `start`, removed on `close()`; the
        delivery carries the stream sequence. A handler that raises is logged
        and the next commit is delivered. A message that is not a commit goes
        to `on_skip` (default: a logged warning) and the next is delivered.

        Raises:
            ValueError: `start` other than "new" in core mode.
            StoreUnavailable: not connected; StoreError: the consumer was refused.
        """
        subject = self.filter(f)
        if not self._cfg.jetstream:
            if start != "new":
                raise ValueError("core NATS has no history: start must be 'new'")

            async def on_core(subj: str, data: bytes, headers: dict[str, str]) -> None:
                try:
                    delivery = decode_delivery(self._prefix, subj, data, headers=headers)
                except AngzarrESError as exc:
                    if on_skip is None:
                        log.warning("dropping undecodable message on %s: %s", subj, exc)
                    else:
                        on_skip(subj, 0, exc)
                    return
                await _call(handler, delivery)

            sub = await bw.core_subscribe(self._wire, subject, on_core)
            return self._keep(sub.close)
        reader = CatchUp(self._wire, self._cfg, subject, start, on_skip=on_skip)
        await reader.open()

        idle = asyncio.Event()
        idle.set()
        closing = asyncio.Event()

        marker = object()

        async def pump() -> None:
            bw.calling.set(marker)  # this task's context: seen by the handler
            async for delivery in reader:
                if closing.is_set():
                    return
                idle.clear()
                try:
                    await _call(handler, delivery)
                finally:
                    idle.set()

        task = asyncio.create_task(pump(), name=f"angzarr-subscribe {subject}")
        task.add_done_callback(_log_death)

        async def close() -> None:
            closing.set()
            if bw.calling.get() is marker and not idle.is_set():
                # From the handler (or work it started) while it runs: the
                # pump stops once it returns.
                await reader.aclose()
                return
            await idle.wait()  # the call in progress finishes; the next never starts
            # Closing the reader first ends the pump by itself, also when it is
            # re-making its consumer (a cancel there would leave that consumer).
            await reader.aclose()
            done, _ = await asyncio.wait({task}, timeout=PUMP_EXIT)
            if not done:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task  # its death, if any, was logged by _log_death

        return self._keep(close)

    def _keep(self, close: Callable[[], Awaitable[None]]) -> Subscription:
        sub = Subscription(close, lambda: self.subscriptions.discard(sub))
        self.subscriptions.add(sub)
        return sub

    async def provision(self) -> None:
        """Create the dead-letter stream and every `[[bus.nats.consumers]]` durable. Idempotent.

        Raises:
            ConsumerConfigError: an existing consumer conflicts with its definition.
            StoreError: the server refused.
        """
        from angzarr_es.projector import ProjectorSettings, provision_consumer

        await provision_dlq(self._wire, self._cfg)
        for spec in self._cfg.consumers:
            settings = ProjectorSettings(
                name=spec.name,
                subject=spec.filter,
                max_deliver=spec.max_deliver,
                ack_wait=spec.ack_wait,
                backoff=tuple(spec.backoff),
                max_ack_pending=spec.max_ack_pending,
            )
            await provision_consumer(self._wire, self._cfg, settings)


async def _call(handler: Handler, delivery: Delivery) -> None:
    try:
        await handler(delivery)
    except Exception:
        log.exception("subscription handler failed on %s", delivery.subject)


async def provision_dlq(wire: Wire, cfg: NatsConfig) -> None:
    """Create the dead-letter stream `<dlq_stream>` on `<prefix>.dlq.>` if it is missing."""
    name = cfg.dlq_stream
    subject = f"{cfg.subject_prefix}.dlq.>"
    current = await wire.js.stream_settings(name, "dead-letter stream")
    if current is None:
        config, create = _dlq_config(cfg), True
    else:
        subjects = list(current.get("subjects", []))
        if subject in subjects:
            return
        config = msgspec.structs.replace(_dlq_config(cfg), subjects=[*subjects, subject])
        create = False
    await wire.js.stream_put(config, create=create, what=f"dead-letter stream {name}")


def _dlq_config(cfg: NatsConfig) -> m.StreamConfig:
    return m.StreamConfig(
        name=cfg.dlq_stream,
        subjects=[f"{cfg.subject_prefix}.dlq.>"],
        num_replicas=cfg.replicas,
        duplicate_window=int(cfg.duplicate_window * m.NANOS),
        allow_direct=True,
    )


def _log_death(task: asyncio.Task[None]) -> None:
    """A subscription's pump ended by an error, not by `close()`: say so."""
    if not task.cancelled() and task.exception() is not None:
        log.error("subscription stopped: %s", task.get_name(), exc_info=task.exception())


class CatchUp:
    """Replay a filter's history from `start`, then follow live commits.

    Reads through an ephemeral pull consumer (no acks, memory storage) that is
    recreated from the last sequence seen if a gap or a stall is detected, and
    deleted by `aclose()`. Use it as

        async with client.subscribe(filters.domain("player"), start="all") as sub:
            async for delivery in sub:
                ...
    """

    def __init__(
        self,
        wire: Wire,
        cfg: NatsConfig,
        subject: str,
        start: Start,
        *,
        window: int = 256,
        on_skip: SkipHandler | None = None,
    ) -> None:
        self._wire = wire
        self._on_skip = on_skip
        self._cfg = cfg
        self._subject = subject
        self._start = start
        start_config(start)  # validate early
        self._window = window
        self._queue: asyncio.Queue[bw.Pulled] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._name = ""
        self._puller: bw.Puller | None = None
        self._dseq = 0
        self._last_sseq = 0
        self._created = False
        self._broken = False
        self._closed = False

    @property
    def subject(self) -> str:
        """The subject filter being followed."""
        return self._subject

    async def open(self) -> None:
        """Create the consumer and start pulling (done by the first `__anext__` otherwise)."""
        if self._puller is not None:
            return
        await self._create(self._resume_from())

    def _resume_from(self) -> Start:
        """Where a (re)created consumer starts: after the last commit seen, or at
        `start` while nothing has been (a consumer from "new" has seen the end)."""
        if self._last_sseq or (self._created and self._start == "new"):
            return self._last_sseq + 1
        return self._start

    async def _create(self, start: Start) -> None:
        stream = self._cfg.stream_name
        self._name = "angzarr-sub-" + uuid.uuid4().hex[:16]
        config = m.ConsumerConfig(
            name=self._name,
            ack_policy="none",
            filter_subject=self._subject,
            inactive_threshold=30 * m.NANOS,
            num_replicas=1,
            mem_storage=True,
            **start_config(start),  # type: ignore[arg-type]
        )
        info = await self._wire.js.consumer_put(stream, config, "create")
        if start == "new":
            self._last_sseq = info.delivered.stream_seq
        self._created = True
        self._dseq = 0
        self._broken = False
        puller = bw.Puller(self._wire, stream, self._name, self._on_msg, self._on_status)
        await puller.start()
        if self._closed:  # aclose() ran while the consumer was being made
            await puller.stop()
            with contextlib.suppress(StoreError):
                await self._wire.js.consumer_delete(stream, self._name)
            return
        self._puller = puller
        await self._top_up()

    def _on_msg(self, msg: bw.Pulled) -> None:
        if self._broken or msg.consumer != self._name:
            return
        if msg.consumer_seq != self._dseq + 1:
            self._broken = True
        else:
            self._dseq = msg.consumer_seq
            self._last_sseq = msg.stream_seq
            self._queue.put_nowait(msg)
        self._wake.set()

    def _on_status(self, status: str, description: str) -> None:
        if status not in ("404", "408"):
            log.debug("subscription %s: %s %s", self._name, status, description)
            self._broken = True
        self._wake.set()

    async def _top_up(self) -> None:
        puller = self._puller
        assert puller is not None
        have = puller.outstanding + self._queue.qsize()
        if have <= self._window // 2:
            await puller.pull(self._window - have)

    async def _recreate(self) -> None:
        """A new consumer from after the last commit seen; while the server is
        unreachable, try again (0.1 s doubling to 5 s apart) until it is back
        or the reader is closed."""
        old = self._puller
        self._puller = None
        if old is not None:
            await old.stop()
        with contextlib.suppress(StoreError):
            await self._wire.js.consumer_delete(self._cfg.stream_name, self._name)
        pause = 0.1
        while not self._closed:
            try:
                await self._create(self._resume_from())
                return
            except (StoreTimeout, StoreUnavailable) as exc:
                if self._closed:
                    return  # closed meanwhile (e.g. by Client.close): the iteration ends
                if self._wire.closed:  # no reconnect will come
                    raise self._client_closed() from exc
                log.warning("subscription to %s: %s; retrying in %.1fs", self._subject, exc, pause)
            # Back-off between attempts, cut short by aclose() (which sets _wake).
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
            pause = min(pause * 2, 5.0)

    def __aiter__(self) -> CatchUp:
        return self

    async def __anext__(self) -> Delivery:
        if self._closed:
            raise StopAsyncIteration
        if self._puller is None:
            await self.open()
        while True:
            puller = self._puller
            if self._closed or puller is None:  # closed by another task meanwhile
                raise StopAsyncIteration
            self._wake.clear()
            if not self._queue.empty():
                msg = self._queue.get_nowait()
                await self._top_up()
                try:
                    return decode_delivery(
                        self._cfg.subject_prefix,
                        msg.subject,
                        msg.data,
                        stream_sequence=msg.stream_seq,
                        delivery_count=msg.delivered,
                        headers=msg.headers,
                    )
                except AngzarrESError as exc:
                    # Someone else's message on our subjects: one reader's
                    # poison must not end the subscription (as in core mode).
                    self._skipped(msg.subject, msg.stream_seq, exc)
                    continue
            if self._wire.closed:
                raise self._client_closed()
            if self._broken or puller.stalled():
                await self._recreate()
                continue
            await self._top_up()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), puller.heartbeat)

    def _client_closed(self) -> StoreUnavailable:
        return StoreUnavailable(f"subscription to {self._subject}: the client was closed")

    def _skipped(self, subject: str, stream_seq: int, exc: AngzarrESError) -> None:
        """A message on the filter that is not a commit was passed over."""
        if self._on_skip is not None:
            self._on_skip(subject, stream_seq, exc)
            return
        log.warning(
            "skipping undecodable message on %s (stream sequence %d): %s", subject, stream_seq, exc
        )

    async def aclose(self) -> None:
        """Stop following and delete the consumer."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()  # an iteration waiting in another task ends
        puller, self._puller = self._puller, None
        if puller is not None:
            await puller.stop()
            try:
                await self._wire.js.consumer_delete(self._cfg.stream_name, self._name)
            except StoreError as exc:
                # Its inactive threshold removes it anyway.
                log.warning("could not delete subscription consumer %s: %s", self._name, exc)

    async def __aenter__(self) -> CatchUp:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
