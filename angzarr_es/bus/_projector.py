"""Durable projectors: a named JetStream pull consumer feeding a handler.

    async with client.projector("player-projector", filters.domain("player"), handle,
                                concurrency=8) as p:
        ...

Semantics (all measured against nats-server in tests/integration/test_projector.py):

- Explicit acks. A handler that returns acks its commit; one that raises gets
  a NAK with the delay `backoff[n-1]` after its n-th delivery (the last value
  repeats), and after the `max_deliver`-th failed delivery the commit is
  copied to the dead-letter stream (`<prefix>.dlq.<domain>`, headers naming
  the projector, the error and the delivery count) and terminated (+TERM).
- A handler that runs past `ack_wait` keeps its commit alive: every message in
  hand gets an in-progress ack (+WPI) every `ack_wait / 3`.
- Up to `concurrency` commits run at once, never two of the same aggregate
  (subject); an aggregate's later commit starts only after the earlier one is
  acked or dead-lettered. A commit NAKed for retry holds back that aggregate's
  later commits until it comes back (or, if another process got it, until
  its retry delay plus `ack_wait` has passed).
- The consumer's ack floor is the checkpoint: a restarted projector resumes
  after the last acked commit. `start` applies when the consumer is created;
  `reset(start)` recreates it to replay from another point.
- Two processes running the same projector share its consumer: each commit is
  handled by one process at a time, but commits of one aggregate may be
  handled by both processes in overlapping time. For strict per-aggregate
  order across processes run partitions: process i of n uses
  `partition=(i, n)`; each partition has its own consumer
  (`<name>-<i>of<n>`), sees every commit and handles only aggregates whose
  subject hashes (CRC-32) to i, acking the others unhandled. A partition's
  consumer pins one process at a time (`pinned_client` policy); a second
  process on the same partition is a standby that takes over when the first
  stops or goes silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import weakref
import zlib
from collections.abc import Callable
from typing import Any

import msgspec

from angzarr_es import _nats, _otel, tracing
from angzarr_es._lifecycle import StartsOnEnter
from angzarr_es._nats import Wire
from angzarr_es._observe import Observer
from angzarr_es._provision import create_domain_stream, ensure_dead_letters
from angzarr_es.bus._deadletter import DeadLetters
from angzarr_es.bus._delivery import Handler, Start, check_handler, decode_delivery, handling
from angzarr_es.bus._feed import Feed
from angzarr_es.bus._inhand import InHand
from angzarr_es.bus._ordering import Key, KeyOrder
from angzarr_es.bus._settings import ProjectorSettings, ProjectorStats, provision_consumer
from angzarr_es.bus._settle import Settler
from angzarr_es.config import NatsConfig
from angzarr_es.errors import AngzarrESError, StoreError
from angzarr_es.subjects import Subjects

__all__ = ["Projector", "handler_task"]

log = logging.getLogger("angzarr_es")

# The task running a projector handler, seen from anything the handler awaits
# (asyncio.wait_for runs its awaitable in a task of its own on Python 3.11).
# A weak reference: the task's own context holds it, and a strong one would
# make every handled delivery a reference cycle left for the garbage collector.
_handler_task: contextvars.ContextVar[weakref.ref[asyncio.Task[None]] | None] = (
    contextvars.ContextVar("angzarr_es_projector_handler", default=None)
)


def handler_task() -> asyncio.Task[None] | None:
    """The projector handler task the caller runs in (or was started from), if any."""
    ref = _handler_task.get()
    return None if ref is None else ref()


class Projector(StartsOnEnter):
    """A running durable projector; make it with `client.projector(...)`."""

    def __init__(
        self,
        wire: Wire,
        cfg: NatsConfig,
        settings: ProjectorSettings,
        handler: Handler,
        observer: Observer | None = None,
        *,
        stream: str = "",
        domain: str = "",
    ) -> None:
        settings.check()
        check_handler(handler)
        self._observer = observer
        self._wire = wire
        self._cfg = cfg
        # The stream its consumer lives in (one domain's in per-domain layout).
        self._stream = stream or cfg.stream_name
        # Per-domain layout: the domain whose stream start() makes if missing.
        self._domain = domain
        self._settings = settings
        self._handler = handler
        self._events = Subjects(cfg.subject_prefix).events_root
        self._buffer = settings.buffer or max(4 * settings.concurrency, 64)
        if settings.max_ack_pending > 0:  # -1 (or 0): the server's unlimited or default
            self._buffer = min(self._buffer, settings.max_ack_pending)
        self._in_hand = InHand()
        self._order = KeyOrder()
        self._dead_letters = DeadLetters(
            wire, cfg, settings.name, settings.durable, observer, stream=self._stream
        )
        self._settle = Settler(wire, settings.name, settings, self._dead_letters)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        # Set while a stop() runs: another stop() (not from a handler) waits for it.
        self._stop_done: asyncio.Event | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._running = 0
        self._settled = asyncio.Event()
        self._feed = Feed(
            wire,
            cfg,
            settings,
            self._on_msg,
            self._wake.set,
            self._settled.set,
            stream=self._stream,
        )
        self._advisories: _nats.CoreSubscription | None = None
        # Set once a stop's drain time is over: no handler may start any more.
        self._halted = False

    @property
    def name(self) -> str:
        """The projector's name."""
        return self._settings.name

    @property
    def settings(self) -> ProjectorSettings:
        """The settings it runs with."""
        return self._settings

    @property
    def stats(self) -> ProjectorStats:
        """Counters so far."""
        return self._settle.stats()

    @property
    def in_hand(self) -> int:
        """Commits received and not yet settled (acked, handed back or
        dead-lettered): those whose handler runs and those waiting their turn."""
        return len(self._in_hand)

    async def wait(
        self, predicate: Callable[[ProjectorStats], bool], timeout: float | None = None
    ) -> ProjectorStats:
        """Wait until `predicate(stats)` holds, e.g. `await p.wait(lambda s: s.handled >= 10)`.

        Raises:
            TimeoutError: not within `timeout` seconds.
            StoreError: the durable consumer was deleted (by someone else) while
                running: the projector stopped pulling.
        """
        async with asyncio.timeout(timeout):
            while not predicate(stats := self.stats):
                if self._feed.gone is not None:
                    raise self._feed.gone
                self._settled.clear()
                await self._settled.wait()
        return stats

    @property
    def running(self) -> bool:
        """Whether it is pulling commits (False once its consumer was deleted under it)."""
        return self._loop_task is not None and self._feed.gone is None

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Provision the dead-letter stream and the consumer, then start handling.

        Raises:
            ConsumerConfigError: the existing consumer conflicts.
            StoreError: the server refused.
        """
        if self._loop_task is not None:
            return
        self._feed.rearm()
        self._halted = False
        # The consumer first: on a stream that does not exist it fails, and
        # then no dead-letter stream is left behind either.
        if self._domain:  # as angzarr does before starting a consumer
            await create_domain_stream(self._wire, self._cfg, self._domain)
        await provision_consumer(self._wire, self._cfg, self._settings, self._stream)
        await ensure_dead_letters(self._wire, self._cfg)
        self._advisories = await self._dead_letters.follow_advisories(self._on_exceeded)
        try:
            await self._feed.start()
        except BaseException:
            await self._advisories.close()
            self._advisories = None
            raise
        self._stopping = False
        self._loop_task = asyncio.create_task(self._loop(), name=f"angzarr-projector {self.name}")

    async def stop(self, *, drain_timeout: float | None = 30.0) -> None:
        """Stop pulling, wait for running handlers (acking what finishes), and
        hand back (NAK) commits that were received but not started."""
        while (running := self._stop_done) is not None and not running.is_set():
            # A stop is under way. From one of our handlers, return at once
            # (that stop may be waiting for this very handler); else wait for
            # it, and finish the job if it was cancelled half way.
            if handler_task() is not None:
                return
            await running.wait()
        if self._loop_task is None:
            return
        self._stop_done = asyncio.Event()
        try:
            await self._stop(drain_timeout)
        finally:
            self._stop_done.set()

    def runs(self, task: asyncio.Task[Any]) -> bool:
        """Whether `task` is one of this projector's handler calls."""
        return task in self._tasks or self._in_hand.is_detached(task)

    async def settle(self, timeout: float | None = 30.0) -> None:
        """Wait (up to `timeout`) for handlers a stop() from a handler left
        running: each acks its own commit when it returns. The calling
        handler itself is not waited for."""
        callers = self._callers()
        pending = {t for t in self._in_hand.detached() if t not in callers and not t.done()}
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def _stop(self, drain_timeout: float | None) -> None:
        assert self._loop_task is not None
        self._stopping = True
        puller = await self._feed.stop()
        self._loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._loop_task
        self._loop_task = None
        await self._feed.forget_check()
        # A commit on its last delivery cannot be handed back (the server would
        # give up on it at once, and with no projector running its advisory is
        # lost): those in hand are handled within the drain, in order.
        self._pump()
        await self._drain(drain_timeout)
        # Time is up: start nothing more, and cancel what still runs (a
        # cancelled handler's finally would otherwise start the next commit).
        self._halted = True
        callers = self._callers()
        while late := {t for t in self._tasks if t not in callers}:
            for task in late:
                task.cancel()
            await asyncio.wait(late)
        advisories, self._advisories = self._advisories, None
        if advisories is not None:
            await advisories.close()
        # Commits in hand and not running (a stop() from a handler leaves its
        # caller's commit to be acked when it returns).
        idle = self._in_hand.hand_back()
        for msg in idle:
            if msg.delivered >= self._settings.max_deliver:
                await self._settle.give_up(msg)  # not reached in the drain: never dropped
        returned = [p for p in idle if p.delivered < self._settings.max_deliver]
        self._order.clear()
        try:
            for msg in returned:
                await _nats.reply(self._wire, msg.reply, _nats.nak_body(0))
            await _nats.flush(self._wire)
            if puller is not None:
                # Only now, with nothing of ours in flight, may a standby take over.
                await puller.unpin()
        except StoreError as exc:
            log.warning(
                "projector %s: could not hand back %d commits: %s", self.name, len(returned), exc
            )

    def _callers(self) -> set[asyncio.Task[Any] | None]:
        """The tasks stop() must not wait for: itself, and the handler it was
        called from (directly, through asyncio.wait_for, or from a task that
        handler started while it runs)."""
        return {asyncio.current_task(), handler_task()}

    async def _drain(self, timeout: float | None) -> None:
        """Wait up to `timeout` for the running handlers (and those stop() starts),
        keeping every commit in hand alive with in-progress acks. A stop() from a
        handler does not wait for its caller."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        keepalive = max(self._settings.ack_wait / 3, 0.05)
        callers = self._callers()
        while pending := {t for t in self._tasks if t not in callers}:
            left = keepalive if deadline is None else min(keepalive, deadline - loop.time())
            if left <= 0:
                return
            await asyncio.wait(pending, timeout=left)
            try:
                await self._in_hand.keep_alive(self._wire)
            except StoreError as exc:
                log.warning("projector %s: in-progress ack while stopping: %s", self.name, exc)

    async def reset(self, start: Start = "all") -> None:
        """Replay from `start`: recreate the consumer there (dropping its checkpoint).

        A running projector is stopped (drained) and restarted around it.

        Raises:
            StoreError: the server refused.
        """
        settings = msgspec.structs.replace(self._settings, start=start)
        settings.check()  # before anything is stopped or deleted
        was_running = self._loop_task is not None  # also after its consumer was deleted
        await self.stop()
        self._settings = settings
        await self._wire.js.consumer_delete(self._stream, settings.durable)
        self._in_hand.orphan()
        await provision_consumer(self._wire, self._cfg, settings, self._stream)
        if was_running:
            await self.start()

    async def checkpoints(self) -> dict[str, int]:
        """Per stream it reads, the ack floor's stream sequence (one stream,
        except a filter spanning domains in per-domain layout)."""
        return {self._stream: await self.checkpoint()}

    async def checkpoint(self) -> int:
        """Stream sequence of the consumer's ack floor (every commit up to it is acked)."""
        info = await self._wire.js.consumer_info(self._stream, self._settings.durable)
        return 0 if info is None else info.ack_floor.stream_seq

    async def delete(self) -> None:
        """Stop and remove the durable consumer (its checkpoint is lost)."""
        await self.stop()
        await self._wire.js.consumer_delete(self._stream, self._settings.durable)

    # -- receiving -----------------------------------------------------------

    def _on_msg(self, msg: _nats.Pulled) -> None:
        if self._stopping:
            # Arrived while stopping: hand it straight back.
            if msg.delivered < self._settings.max_deliver:
                self._send_soon(msg.reply, _nats.nak_body(0))
            return
        part = self._settings.partition
        if not msg.subject.startswith(self._events) or (
            part is not None and zlib.crc32(msg.subject.encode()) % part[1] != part[0]
        ):
            # Another partition's commit, or no commit at all (a filter such as
            # `<prefix>.>` also matches the correlation index's entries).
            self._settle.skipped += 1
            self._settled.set()
            self._send_soon(msg.reply, _nats.ACK)
            return
        if self._in_hand.receive(msg):
            self._order.add(msg.subject, msg.stream_seq, time.monotonic())
        self._pump()
        self._wake.set()

    def _send_soon(self, subject: str, body: bytes) -> None:
        task = asyncio.create_task(_nats.reply(self._wire, subject, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- dispatch ------------------------------------------------------------

    def _pump(self) -> None:
        now = time.monotonic()
        limit = self._settings.concurrency
        while self._running < limit and (taken := self._order.take(now, self._held)):
            subject, key, seq = taken
            self._running += 1
            task = asyncio.create_task(self._handle(subject, key, seq))
            self._in_hand.started(seq, task)
            task.set_name("handler")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _held(self, seq: int) -> bool:
        """Whether stop() keeps `seq` from starting: it was handed back (or
        dead-lettered), or the drain time is over."""
        return self._stopping and (self._halted or not self._last_delivery(seq))

    def _last_delivery(self, seq: int) -> bool:
        msg = self._in_hand.get(seq)
        return msg is not None and msg.delivered >= self._settings.max_deliver

    async def _handle(self, subject: str, key: Key, seq: int) -> None:
        me = asyncio.current_task()
        _handler_task.set(None if me is None else weakref.ref(me))
        try:
            msg = self._in_hand[seq]
            if msg.delivered > 1 and self._observer is not None:
                self._observer.redelivered(self.name)
            try:
                delivery = decode_delivery(
                    self._cfg.subject_prefix,
                    msg.subject,
                    msg.data,
                    stream_sequence=seq,
                    delivery_count=msg.delivered,
                    headers=msg.headers,
                )
                if _otel.ENABLED:
                    with handling(delivery, self.name):
                        await self._handler(delivery)
                elif msg.headers and tracing.HEADER in msg.headers:
                    # The handler runs as a child span of the append's trace.
                    with tracing.continue_from(msg.headers):
                        await self._handler(delivery)
                else:
                    await self._handler(delivery)
            except Exception as exc:  # noqa: BLE001 - any handler error is a failed delivery
                await self._settle.failed_with(key, seq, self._in_hand.settle(seq, msg), exc)
            else:
                await self._settle.succeeded(self._in_hand.settle(seq, msg))
        except AngzarrESError as exc:
            log.error("projector %s: could not settle %s #%d: %s", self.name, subject, seq, exc)
        finally:
            self._in_hand.finished(seq, asyncio.current_task())  # type: ignore[arg-type]
            self._settled.set()
            self._running -= 1
            self._order.release(subject, key, time.monotonic())
            self._pump()
            self._wake.set()

    def _on_exceeded(self) -> None:
        """The server gave up on a commit by itself and it was dead-lettered."""
        self._settle.dead += 1
        self._settled.set()

    # -- the loop: pulls, in-progress acks, unblocking, stalls -----------------

    async def _loop(self) -> None:
        s = self._settings
        keepalive = max(s.ack_wait / 3, 0.05)
        next_keepalive = time.monotonic() + keepalive
        while not self._stopping:
            puller = self._feed.puller
            if puller is None or self._feed.gone is not None:
                return
            self._wake.clear()
            self._feed.check_gone()
            try:
                now = time.monotonic()
                await self._feed.top_up(puller, len(self._in_hand), self._buffer, now)
                if now >= next_keepalive:
                    next_keepalive = now + keepalive
                    await self._in_hand.keep_alive(self._wire)
                wake_at = min(
                    next_keepalive, self._feed.paused_until(now), self._order.unblock(now)
                )
                self._pump()
            except StoreError as exc:
                log.warning("projector %s: %s", self.name, exc)
                wake_at = time.monotonic() + 1.0
            timeout = max(0.0, min(wake_at - time.monotonic(), puller.heartbeat))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
