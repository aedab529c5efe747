"""Subscriptions for the bus: core subscriptions, pull requests and acks."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from angzarr_es._nats import messages as m
from angzarr_es._nats.api import CONSUMER_NEXT, ack_metadata
from angzarr_es._nats.connection import settle_subscriptions
from angzarr_es._nats.errors import translated
from angzarr_es._nats.wire import Wire
from angzarr_es.errors import StoreError

log = logging.getLogger("angzarr_es")

ACK = b"+ACK"
PROGRESS = b"+WPI"
TERM = b"+TERM"


class Pulled:
    """One message delivered by a consumer, with its ack metadata."""

    __slots__ = (
        "consumer",
        "consumer_seq",
        "data",
        "delivered",
        "headers",
        "pending",
        "reply",
        "stream_seq",
        "subject",
        "timestamp_ns",
    )

    def __init__(
        self, subject: str, data: bytes, reply: str, headers: dict[str, str] | None = None
    ) -> None:
        self.subject = subject
        self.data = data
        self.reply = reply
        # The commit's stored headers (trace context, for one).
        self.headers = headers
        (
            self.consumer,
            self.delivered,
            self.stream_seq,
            self.consumer_seq,
            self.timestamp_ns,
            self.pending,
        ) = ack_metadata(reply)


# Which subscription's handler the current code runs in (a subscription
# object, or None): lets close() tell a call from its own handler, also
# through asyncio.wait_for, which runs its awaitable in a new task.
calling: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "angzarr_es_calling", default=None
)

# A core message: (subject, payload, headers).
CoreHandler = Callable[[str, bytes, dict[str, str]], Awaitable[None]]


class CoreSubscription:
    """A plain NATS subscription delivering (subject, payload, headers) to a coroutine."""

    def __init__(self, handler: CoreHandler) -> None:
        self._handler = handler
        self._sub: Subscription | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._deferred: asyncio.Task[None] | None = None

    async def _on_msg(self, msg: Msg) -> None:
        if self._closed:
            return
        self._idle.clear()
        token = calling.set(self)
        try:
            await self._handler(msg.subject, msg.data, dict(msg.headers or {}))
        finally:
            calling.reset(token)
            self._idle.set()
            if self._closed and self._sub is not None and self._deferred is None:
                # Closed from the handler: unsubscribe now that it returned
                # (nats-py cancels the task that ran it).
                self._deferred = asyncio.get_running_loop().create_task(self._unsubscribe())

    async def close(self) -> None:
        """Let the handler call in progress finish, then unsubscribe; messages
        already queued are dropped. Called from the handler itself, it returns
        at once, and the unsubscribe follows when the handler returns."""
        self._closed = True
        if calling.get() is self and not self._idle.is_set():
            return  # from the handler (or work it started), while it runs
        await self._idle.wait()
        await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()


async def core_subscribe(wire: Wire, subject: str, handler: CoreHandler) -> CoreSubscription:
    """Subscribe to `subject`; `handler` runs for one message at a time, in arrival order.

    Raises:
        StoreUnavailable: the connection is closed.
    """
    core = CoreSubscription(handler)
    with translated(f"subscribe to {subject}"):
        core._sub = await wire.nc.subscribe(subject, cb=core._on_msg)
    # Once the server has the interest, publishes from anywhere reach us.
    await settle_subscriptions(wire.nc, wire.timeout)
    return core


class Puller:
    """Pull requests for one consumer, with replies on a private inbox.

    `on_msg` receives every delivered message and `on_status` every status
    other than heartbeats (408 request expired, 409 consumer deleted, ...).
    `outstanding` counts messages requested and not yet delivered.
    """

    def __init__(
        self,
        wire: Wire,
        stream: str,
        consumer: str,
        on_msg: Callable[[Pulled], None],
        on_status: Callable[[str, str], None],
        *,
        expires: float = 30.0,
        heartbeat: float = 5.0,
        group: str = "",
    ) -> None:
        self.wire = wire
        self.stream = stream
        self.consumer = consumer
        self.on_msg = on_msg
        self.on_status = on_status
        self.expires = expires
        self.heartbeat = heartbeat
        # With a priority group (pinned client policy): the pin we hold, if any.
        self.group = group
        self.pin_id = ""
        self.outstanding = 0
        self.last_seen = time.monotonic()
        self._inbox = wire.nc.new_inbox()
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Subscribe to the reply inbox."""
        with translated(f"pull from {self.consumer}"):
            self._sub = await self.wire.nc.subscribe(self._inbox, cb=self._on_reply)
        self.wire.pullers.add(self)

    @property
    def inbox(self) -> str:
        """The subject the server sends this consumer's messages and statuses to."""
        return self._inbox

    async def _on_reply(self, msg: Msg) -> None:
        self.last_seen = time.monotonic()
        headers = msg.headers
        status = headers.get(m.STATUS) if headers else None
        if status is None:
            self.outstanding = max(0, self.outstanding - 1)
            if self.group and headers:
                self.pin_id = headers.get(m.H_PIN_ID, self.pin_id)
            self.on_msg(Pulled(msg.subject, msg.data, msg.reply, headers))
            return
        if status == "100":
            return
        assert headers is not None
        left = headers.get(m.H_PENDING_MSGS)
        if left is not None and left.isdigit():
            self.outstanding = max(0, self.outstanding - int(left))
        else:
            self.outstanding = 0
        if status == "423":
            self.pin_id = ""  # another client holds the pin: ask again, unpinned
        self.on_status(status, headers.get(m.H_DESCRIPTION, ""))

    async def pull(self, batch: int) -> None:
        """Ask for up to `batch` more messages (delivered as they become available)."""
        body = m.encode(
            m.PullRequest(
                batch=batch,
                expires=int(self.expires * m.NANOS),
                idle_heartbeat=int(self.heartbeat * m.NANOS),
                group=self.group,
                id=self.pin_id,
            )
        )
        self.outstanding += batch
        subject = CONSUMER_NEXT.format(stream=self.stream, consumer=self.consumer)
        with translated(f"pull from {self.consumer}"):
            await self.wire.nc.publish(subject, body, reply=self._inbox)

    async def unpin(self) -> None:
        """Give up the pin (if held) so a standby client takes over at once."""
        if not (self.group and self.pin_id):
            return
        self.pin_id = ""
        try:
            await self.wire.js.consumer_unpin(self.stream, self.consumer, self.group)
        except StoreError as exc:  # the pin expires on its own (priority_timeout)
            log.warning("could not unpin %s: %s", self.consumer, exc)

    def stalled(self) -> bool:
        """Whether requests are outstanding but the server has gone quiet past two heartbeats."""
        quiet = time.monotonic() - self.last_seen
        return self.outstanding > 0 and quiet > 2 * self.heartbeat + 1.0

    def forget(self) -> None:
        """Treat every outstanding request as lost (after a stall)."""
        self.outstanding = 0
        self.last_seen = time.monotonic()

    async def stop(self) -> None:
        """Unsubscribe the inbox; late replies are dropped."""
        self.wire.pullers.discard(self)
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None


async def reply(wire: Wire, subject: str, body: bytes) -> None:
    """Send an ack, nak, progress or term to a message's reply subject."""
    with translated("acknowledge"):
        await wire.nc.publish(subject, body)


def nak_body(delay: float) -> bytes:
    """A NAK asking for redelivery after `delay` seconds."""
    if delay <= 0:
        return b"-NAK"
    return b'-NAK {"delay": %d}' % int(delay * m.NANOS)


async def flush(wire: Wire) -> None:
    """Wait until the server has seen everything published so far."""
    with translated("flush"):
        await wire.nc.flush(timeout=max(1, int(wire.timeout)))
