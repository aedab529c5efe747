"""A subscription's feed: notifications from an ephemeral JetStream consumer.

A core NATS subscription sees the messages of an atomic batch before it
commits, even those of batches then refused, so the feed reads committed
messages only, through a consumer: ack none, in memory, one replica,
filtered to the recorder's stored events, starting after `gt`. It is pulled
in batches and kept at most `BUFFER` notifications ahead of the reader, and
recreated from the last notification delivered when it is lost: a gap in
the consumer's sequence, a status saying it is gone, or silence past two
heartbeats (a reconnect, a server restart).

`Buffer` hands notifications from the event loop to the reading thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from eventsourcing.persistence import Notification, PersistenceError

from angzarr_es._nats import Pulled, Puller, Wire
from angzarr_es._nats import messages as m
from angzarr_es.errors import AngzarrESError
from angzarr_es.eventsourcing._errors import persistence_error
from angzarr_es.eventsourcing._layout import Layout
from angzarr_es.eventsourcing._records import decode_event, notification

__all__ = ["BUFFER", "Buffer", "Feed"]

log = logging.getLogger("angzarr_es")

BUFFER = 1024
"""Notifications delivered and not yet read, at most (plus those asked for)."""
PULL = 256
"""Messages asked for per pull request."""
HEARTBEAT = 2.0
"""Seconds between the server's idle heartbeats on a pull request."""
RESTARTS = 20
"""Failed attempts in a row to recreate a lost consumer before the subscription fails."""


class Buffer:
    """Notifications on their way from the event loop to the reading thread."""

    def __init__(self, on_drain: Callable[[], None]) -> None:
        self._items: deque[Notification] = deque()
        self._ready = threading.Condition()
        self._error: PersistenceError | None = None
        self._closed = False
        self._on_drain = on_drain

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Notification) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify()

    def fail(self, error: PersistenceError) -> None:
        with self._ready:
            if self._error is None:
                self._error = error
            self._ready.notify_all()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def wake(self) -> None:
        """Make a waiting `take` look at its `stopped()` again."""
        with self._ready:
            self._ready.notify_all()

    def take(self, stopped: Callable[[], bool]) -> Notification | None:
        """The next notification, waiting for one; None once closed or `stopped()`.

        Raises:
            PersistenceError: the feed failed.
        """
        with self._ready:
            while not self._items and not self._closed and self._error is None:
                if stopped():
                    return None
                self._ready.wait()
            if stopped() or self._closed:
                return None
            if not self._items and self._error is not None:
                raise self._error
            item = self._items.popleft()
            if len(self._items) == BUFFER // 2:
                self._on_drain()
            return item


class Feed:
    """The consumer behind one subscription (lives on the factory's event loop)."""

    def __init__(
        self, wire: Wire, stream: str, layout: Layout, gt: int | None, topics: Sequence[str]
    ) -> None:
        self._wire = wire
        self._stream = stream
        self._layout = layout
        self._topics = frozenset(topics)
        self.buffer: Buffer | None = None
        self._last = gt or 0  # stream sequence of the last notification seen
        self._consumer = ""
        self._delivered = 0  # consumer sequence of the last message
        self._puller: Puller | None = None
        self._broken = False
        self._watchdog: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def start(self, buffer: Buffer) -> None:
        """Create the consumer and ask for the first notifications.

        Raises:
            StoreError: the consumer could not be created.
        """
        self.buffer = buffer
        await self._open()
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def _open(self) -> None:
        name = "es-sub-" + secrets.token_hex(8)
        config = m.ConsumerConfig(
            name=name,
            deliver_policy="by_start_sequence",
            opt_start_seq=self._last + 1,
            ack_policy="none",
            filter_subject=self._layout.filter,
            inactive_threshold=30 * m.NANOS,
            num_replicas=1,
            mem_storage=True,
        )
        await self._wire.js.consumer_put(self._stream, config)
        puller = Puller(
            self._wire, self._stream, name, self._on_msg, self._on_status, heartbeat=HEARTBEAT
        )
        await puller.start()
        self._consumer, self._puller, self._delivered, self._broken = name, puller, 0, False
        await self._pull()

    async def _pull(self) -> None:
        puller, buffer = self._puller, self.buffer
        if puller is None or buffer is None or self._closed or self._broken:
            return
        room = BUFFER - len(buffer) - puller.outstanding
        if room >= PULL:
            await puller.pull(room)

    def more(self) -> None:
        """Ask for more if the reader has made room (call on the loop)."""
        self._spawn(self._pull())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._broken = True  # the watchdog recreates the consumer
            log.debug("subscription pull failed: %r", task.exception())

    def _on_msg(self, pulled: Pulled) -> None:
        if pulled.consumer != self._consumer or self._broken or self.buffer is None:
            return  # a late message of a consumer given up
        if pulled.consumer_seq != self._delivered + 1:
            self._broken = True  # a message was lost on the way: start again after the last
            return
        self._delivered = pulled.consumer_seq
        self._last = pulled.stream_seq
        where = f"{pulled.subject} #{pulled.stream_seq}"
        try:
            record = decode_event(pulled.data, where)
        except PersistenceError as exc:
            self.buffer.fail(exc)
            return
        if not self._topics or record.topic in self._topics:
            self.buffer.put(notification(record, pulled.stream_seq, self._layout.id_value))
        if self._puller is not None and self._puller.outstanding == 0:
            self.more()

    def _on_status(self, status: str, description: str) -> None:
        if status in ("404", "408"):  # no messages yet; the request expired
            self.more()
            return
        log.debug("subscription consumer %s: %s %s", self._consumer, status, description)
        self._broken = True

    async def _watch(self) -> None:
        failures = 0
        while not self._closed:
            await asyncio.sleep(HEARTBEAT)
            puller = self._puller
            if puller is not None and puller.stalled():
                self._broken = True
            if not self._broken:
                await self._pull()
                continue
            try:
                await self._discard()
                await self._open()
                failures = 0
            except AngzarrESError as exc:
                failures += 1
                if failures >= RESTARTS and self.buffer is not None:
                    self.buffer.fail(persistence_error(exc, "subscription"))
                    return

    async def _discard(self) -> None:
        puller, name = self._puller, self._consumer
        self._puller, self._consumer = None, ""
        if puller is not None:
            await puller.stop()
        if name:
            with contextlib.suppress(AngzarrESError):
                await self._wire.js.consumer_delete(self._stream, name)

    async def close(self) -> None:
        """Stop pulling and delete the consumer (its inactive threshold would, later)."""
        if self._closed:
            return
        self._closed = True
        for task in [self._watchdog, *self._tasks]:
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        await self._discard()
        if self.buffer is not None:
            self.buffer.close()
