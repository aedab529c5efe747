"""The Bus: core NATS publish, and live subscriptions (core or JetStream)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from angzarr_es import _nats, _otel
from angzarr_es._durables import configured_consumer_config, provision_consumer
from angzarr_es._lifecycle import ClosesOnExit
from angzarr_es._nats import Wire
from angzarr_es._provision import ensure_dead_letters
from angzarr_es.bus._delivery import (
    Delivery,
    Handler,
    SkipHandler,
    Start,
    check_handler,
    check_skip_handler,
    decode_delivery,
    handling,
    root_of,
)
from angzarr_es.bus._span import homes, make_catch_up
from angzarr_es.config import NatsConfig
from angzarr_es.errors import (
    AngzarrESError,
    ConfigError,
    PermissionDenied,
    StoreUnavailable,
)
from angzarr_es.filters import FilterLike, resolve
from angzarr_es.pb import core_pb2
from angzarr_es.subjects import AggregateId, Subjects, validate_domain, validate_edition

__all__ = ["CAPTURE_CHECK_TTL", "Bus", "Subscription"]

log = logging.getLogger("angzarr_es")

# How long core mode trusts "no stream captures this domain's subjects" before
# `Bus.publish` asks the server again.
CAPTURE_CHECK_TTL = 10.0
# How long closing a subscription waits for its pump to see the reader closed.
PUMP_EXIT = 5.0


class Subscription(ClosesOnExit):
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


class Bus:
    """Publish and subscribe; obtain it as `client.bus`."""

    def __init__(self, wire: Wire, cfg: NatsConfig) -> None:
        self._wire = wire
        self._cfg = cfg
        self._prefix = cfg.subject_prefix
        self._subjects = Subjects(cfg.subject_prefix)
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
        return self._subjects.aggregate(validate_domain(domain), root)

    def filter(self, f: FilterLike) -> str:
        """The NATS subject filter for `f` under this client's prefix."""
        return resolve(f, self._prefix)

    async def publish(self, book: core_pb2.EventBook, *, root: AggregateId | None = None) -> None:
        """Core mode: send `book` on its aggregate's subject, at most once.

        The subject comes from `book.cover` (domain, the root read as a UUID
        when it is 16 bytes not all ASCII, else as UTF-8 text, and the
        edition's token for a what-if timeline); pass `root` to override the
        root (a 16-byte id of non-ASCII text would read as a UUID).

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
        aggregate = root if root is not None else root_of(book.cover)
        subject = self.subject(domain, aggregate)
        edition = validate_edition(book.cover.edition.name)
        if edition:  # a what-if timeline's commits travel on their own subject
            subject = self._subjects.aggregate(domain, aggregate, edition)
        await self._refuse_captured(domain, subject)
        await self._wire.publish(subject, book.SerializeToString())

    async def _refuse_captured(self, domain: str, subject: str) -> None:
        now = asyncio.get_running_loop().time()
        if self._uncaptured.get(domain, 0.0) > now:
            return
        streams: list[str] = []
        try:
            streams = await self._wire.js.stream_names(self._subjects.domain_all(domain))
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
            TypeError: `handler` is not an `async def` (nor an object with an
                async `__call__`), or `on_skip` is.
            ValueError: `start` other than "new" in core mode.
            StoreUnavailable: not connected; StoreError: the consumer was refused.
        """
        check_handler(handler)
        check_skip_handler(on_skip)
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

            sub = await _nats.core_subscribe(self._wire, subject, on_core)
            return self._keep(sub.close)
        reader = make_catch_up(self._wire, self._cfg, subject, start, on_skip)
        await reader.open()

        idle = asyncio.Event()
        idle.set()
        closing = asyncio.Event()

        marker = object()

        async def pump() -> None:
            _nats.calling.set(marker)  # this task's context: seen by the handler
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
            if _nats.calling.get() is marker and not idle.is_set():
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

        In per-domain layout a consumer whose filter spans domains is made in
        every domain stream that exists (a projector makes it in later ones).

        Raises:
            ConsumerConfigError: an existing consumer conflicts with its definition.
            StoreError: the server refused.
        """
        await ensure_dead_letters(self._wire, self._cfg)
        for spec in self._cfg.consumers:
            # As `plan_provision(bus=True)` plans it (a checked configuration),
            # in every stream the filter spans (per-domain layout).
            wanted = configured_consumer_config(spec)
            for stream in await homes(self._wire, self._cfg, spec.filter):
                await provision_consumer(self._wire, self._cfg, wanted, stream)


async def _call(handler: Handler, delivery: Delivery) -> None:
    try:
        if _otel.ENABLED:
            with handling(delivery):
                await handler(delivery)
        else:
            await handler(delivery)
    except Exception:
        log.exception("subscription handler failed on %s", delivery.subject)


def _log_death(task: asyncio.Task[None]) -> None:
    """A subscription's pump ended by an error, not by `close()`: say so."""
    if not task.cancelled() and task.exception() is not None:
        log.error("subscription stopped: %s", task.get_name(), exc_info=task.exception())
