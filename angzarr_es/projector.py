"""Durable projectors: a named JetStream pull consumer feeding a handler.

    async with client.projector("player-projector", filters.domain("player"), handle,
                                concurrency=8) as p:
        ...

Semantics (all measured against nats-server in tests/test_projector.py):

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
import heapq
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import msgspec

from angzarr_es import _nats as bw
from angzarr_es import tracing
from angzarr_es._nats import Wire
from angzarr_es._nats import messages as m
from angzarr_es._nats.api import MAX_DELIVERIES_ADVISORY
from angzarr_es._nats.errors import CONSUMER_ALREADY_EXISTS
from angzarr_es._observe import StoreObserver
from angzarr_es.bus import Handler, Start, decode_delivery, provision_dlq, start_config
from angzarr_es.config import NatsConfig
from angzarr_es.errors import AngzarrESError, ConsumerConfigError, StoreError

__all__ = ["Projector", "ProjectorSettings", "ProjectorStats", "provision_consumer"]

log = logging.getLogger("angzarr_es")

H_PROJECTOR = "Angzarr-Projector"
H_ERROR = "Angzarr-Error"
H_DELIVERIES = "Angzarr-Delivery-Count"
H_SUBJECT = "Angzarr-Subject"
H_STREAM = "Angzarr-Stream"
H_STREAM_SEQ = "Angzarr-Stream-Sequence"
MAX_ERROR_HEADER = 1024
# Partitions: the pinned process keeps its pin by pulling at least this often;
# a standby takes over this long after the pinned one went silent (at once
# after a clean stop, which unpins).
PIN_GROUP = "angzarr"
PIN_TTL = 15.0
# Idle heartbeat asked for with every pull.
HEARTBEAT = 1.0
# Pause before pulling again when the consumer has no leader (status 503).
NO_LEADER_PAUSE = 0.1


class ProjectorSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What defines a projector's durable consumer and its dispatch."""

    name: str
    """Durable consumer name (one token of [A-Za-z0-9_-])."""
    subject: str
    """Subject filter."""
    max_deliver: int = 5
    ack_wait: float = 30.0
    backoff: tuple[float, ...] = (1.0, 5.0, 15.0, 30.0)
    max_ack_pending: int = 1000
    concurrency: int = 1
    start: Start = "all"
    partition: tuple[int, int] | None = None
    buffer: int = 0
    """Commits held in hand at most (0: max(4 * concurrency, 64))."""

    @property
    def durable(self) -> str:
        """The consumer's name on the server."""
        if self.partition is None:
            return self.name
        index, count = self.partition
        return f"{self.name}-{index}of{count}"

    def check(self) -> None:
        """Raises ValueError on settings the server or the dispatcher cannot honour."""
        if not self.name or not all(c.isascii() and (c.isalnum() or c in "_-") for c in self.name):
            raise ValueError(f"projector name {self.name!r} must be [A-Za-z0-9_-]")
        if len(self.durable) > MAX_NAME:
            raise ValueError(
                f"projector name must be at most {MAX_NAME} characters (with its partition)"
            )
        for key in ("concurrency", "max_deliver", "max_ack_pending"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{key} must be an int, got {value!r}")
        if self.max_deliver < 1:
            raise ValueError("max_deliver must be >= 1")
        if self.ack_wait <= 0:
            raise ValueError("ack_wait must be > 0 seconds")
        if any(b < 0 for b in self.backoff):
            raise ValueError("backoff delays must be >= 0 seconds")
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.partition is not None:
            index, count = self.partition
            if count < 1 or not 0 <= index < count:
                raise ValueError(
                    f"partition must be (index, count) with 0 <= index < count: {self.partition}"
                )
        start_config(self.start)

    def consumer_config(self) -> m.ConsumerConfig:
        """The durable consumer as the server should hold it."""
        return m.ConsumerConfig(
            durable_name=self.durable,
            description=f"angzarr_es projector {self.name}",
            ack_policy="explicit",
            replay_policy="instant",
            filter_subject=self.subject,
            ack_wait=int(self.ack_wait * m.NANOS),
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
            priority_policy="pinned_client" if self.partition else "",
            priority_groups=[PIN_GROUP] if self.partition else [],
            priority_timeout=int(PIN_TTL * m.NANOS) if self.partition else 0,
            **start_config(self.start),  # type: ignore[arg-type]
        )


# nats-server's limit on a consumer's name (JSMaxNameLen).
MAX_NAME = 255


class ProjectorStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counters since the projector object was made."""

    handled: int
    """Commits whose handler returned (acked)."""
    failed: int
    """Handler calls that raised (each is retried or dead-lettered)."""
    dead_lettered: int
    skipped: int
    """Commits of other partitions, and messages outside `<prefix>.events.`
    (correlation index entries under a filter such as `<prefix>.>`), acked
    unhandled."""


# Settings the server cannot change in place, or that would make another
# program's consumer ours: a difference is a conflict.
_FIXED = ("filter_subject", "ack_policy", "replay_policy", "deliver_subject", "priority_policy")
# Settings an update may change.
_UPDATABLE = ("ack_wait", "max_deliver", "max_ack_pending", "description")


async def provision_consumer(
    wire: Wire, cfg: NatsConfig, settings: ProjectorSettings
) -> m.DurableInfo:
    """Create the projector's durable consumer, or bring an existing one to its settings.

    Idempotent. The start position applies only at creation.

    Raises:
        ConsumerConfigError: the existing consumer has another filter, ack or
            replay policy, or is a push consumer.
        StoreError: the server refused.
    """
    settings.check()
    stream, name = cfg.stream_name, settings.durable
    wanted = settings.consumer_config()
    for _ in range(3):
        info = await wire.js.consumer_info(stream, name)
        if info is None:
            try:
                return await wire.js.consumer_put(stream, wanted, "create")
            except StoreError as exc:
                if exc.err_code == CONSUMER_ALREADY_EXISTS:
                    continue  # another process made it first: compare with theirs
                raise
        have = info.config
        wanted_raw = msgspec.structs.asdict(wanted)
        conflicts = [
            f"{key}: {have.get(key)!r} (wanted {wanted_raw.get(key) or None!r})"
            for key in _FIXED
            if _unset_none(have.get(key)) != _unset_none(wanted_raw.get(key))
        ]
        if have.get("filter_subjects"):
            conflicts.append(f"filter_subjects: {have['filter_subjects']!r}")
        if conflicts:
            raise ConsumerConfigError(
                f"consumer {name} on stream {stream} exists with a conflicting definition: "
                + "; ".join(conflicts)
                + ". Delete it (nats consumer rm) or choose another projector name."
            )
        changed = [k for k in _UPDATABLE if have.get(k) != wanted_raw.get(k)]
        if not changed:
            return info
        # The start position is the existing consumer's (it cannot change).
        update = msgspec.structs.replace(
            wanted,
            deliver_policy=str(have.get("deliver_policy") or "all"),
            opt_start_seq=int(have.get("opt_start_seq") or 0),
            opt_start_time=str(have.get("opt_start_time") or ""),
        )
        log.info("updating consumer %s: %s", name, ", ".join(changed))
        return await wire.js.consumer_put(stream, update, "update")
    raise ConsumerConfigError(f"consumer {name} keeps changing while being provisioned")


@dataclass(slots=True)
class _Key:
    """Dispatch state of one aggregate (subject)."""

    heap: list[int] = field(default_factory=list)
    busy: bool = False
    blocked_seq: int = 0
    blocked_until: float = 0.0

    def runnable(self, now: float) -> bool:
        return (
            bool(self.heap)
            and not self.busy
            and (not self.blocked_seq or now >= self.blocked_until)
        )


# The task running a projector handler, seen from anything the handler awaits
# (asyncio.wait_for runs its awaitable in a task of its own on Python 3.11).
_handler_task: contextvars.ContextVar[asyncio.Task[None] | None] = contextvars.ContextVar(
    "angzarr_es_projector_handler", default=None
)


def handler_task() -> asyncio.Task[None] | None:
    """The projector handler task the caller runs in (or was started from), if any."""
    return _handler_task.get()


class Projector:
    """A running durable projector; make it with `client.projector(...)`."""

    def __init__(
        self,
        wire: Wire,
        cfg: NatsConfig,
        settings: ProjectorSettings,
        handler: Handler,
        observer: StoreObserver | None = None,
    ) -> None:
        settings.check()
        self._observer = observer
        self._wire = wire
        self._cfg = cfg
        self._settings = settings
        self._handler = handler
        self._events = f"{cfg.subject_prefix}.events."
        self._buffer = settings.buffer or max(4 * settings.concurrency, 64)
        if settings.max_ack_pending > 0:  # -1 (or 0): the server's unlimited or default
            self._buffer = min(self._buffer, settings.max_ack_pending)
        self._in_hand: dict[int, bw.Pulled] = {}
        self._keys: dict[str, _Key] = {}
        # Runnable aggregates as (stream seq of their next commit, subject):
        # the oldest commit goes first. Entries may be stale; _pump checks.
        self._ready: list[tuple[int, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # Stream sequence -> the task running its handler.
        self._active: dict[int, asyncio.Task[None]] = {}
        self._puller: bw.Puller | None = None
        self._loop_task: asyncio.Task[None] | None = None
        # Set while a stop() runs: another stop() (not from a handler) waits for it.
        self._stop_done: asyncio.Event | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._running = 0
        self._handled = self._failed = self._dead = self._skipped = 0
        self._settled = asyncio.Event()
        self._pull_after = 0.0
        self._no_leader = 0
        self._advisories: bw.CoreSubscription | None = None
        # Set when the server deleted the durable consumer under us; a 409
        # "Consumer Deleted" makes the loop check whether it is so.
        self._gone: StoreError | None = None
        self._check_gone = False
        self._gone_check: asyncio.Task[None] | None = None
        # Set once a stop's drain time is over: no handler may start any more.
        self._halted = False
        # Handlers still running when stop() returned (a stop from a handler)
        # -> the delivery each settles itself (None: its consumer was deleted
        # by reset(), and the replay handles the commit again).
        self._detached: dict[asyncio.Task[None], bw.Pulled | None] = {}

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
        return ProjectorStats(
            handled=self._handled,
            failed=self._failed,
            dead_lettered=self._dead,
            skipped=self._skipped,
        )

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
                if self._gone is not None:
                    raise self._gone
                self._settled.clear()
                await self._settled.wait()
        return stats

    @property
    def running(self) -> bool:
        """Whether it is pulling commits (False once its consumer was deleted under it)."""
        return self._loop_task is not None and self._gone is None

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Provision the dead-letter stream and the consumer, then start handling.

        Raises:
            ConsumerConfigError: the existing consumer conflicts.
            StoreError: the server refused.
        """
        if self._loop_task is not None:
            return
        self._gone = None
        self._check_gone = False
        self._halted = False
        # The consumer first: on a stream that does not exist it fails, and
        # then no dead-letter stream is left behind either.
        await provision_consumer(self._wire, self._cfg, self._settings)
        await provision_dlq(self._wire, self._cfg)
        pinned = self._settings.partition is not None
        puller = bw.Puller(
            self._wire,
            self._cfg.stream_name,
            self._settings.durable,
            self._on_msg,
            self._on_status,
            expires=PIN_TTL / 3 if pinned else 30.0,
            # A pull request lost with its server (or sent while the consumer
            # has no leader) is noticed after two missed heartbeats: keep that short.
            heartbeat=HEARTBEAT,
            group=PIN_GROUP if pinned else "",
        )
        advisories = MAX_DELIVERIES_ADVISORY.format(stream=puller.stream, consumer=puller.consumer)
        self._advisories = await bw.core_subscribe(self._wire, advisories, self._on_exceeded)
        try:
            await puller.start()
        except BaseException:
            await self._advisories.close()
            self._advisories = None
            raise
        self._puller = puller
        self._stopping = False
        self._loop_task = asyncio.create_task(self._loop(), name=f"angzarr-projector {self.name}")

    async def stop(self, *, drain_timeout: float | None = 30.0) -> None:
        """Stop pulling, wait for running handlers (acking what finishes), and
        hand back (NAK) commits that were received but not started."""
        while (running := self._stop_done) is not None and not running.is_set():
            # A stop is under way. From one of our handlers, return at once
            # (that stop may be waiting for this very handler); else wait for
            # it, and finish the job if it was cancelled half way.
            if _handler_task.get() is not None:
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
        return task in self._tasks or task in self._detached

    async def settle(self, timeout: float | None = 30.0) -> None:
        """Wait (up to `timeout`) for handlers a stop() from a handler left
        running: each acks its own commit when it returns. The calling
        handler itself is not waited for."""
        callers = self._callers()
        pending = {t for t in self._detached if t not in callers and not t.done()}
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def _stop(self, drain_timeout: float | None) -> None:
        assert self._loop_task is not None
        self._stopping = True
        puller, self._puller = self._puller, None
        if puller is not None:
            await puller.stop()
        self._loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._loop_task
        self._loop_task = None
        if self._gone_check is not None:
            self._gone_check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gone_check
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
        idle = [m for seq, m in self._in_hand.items() if seq not in self._active]
        for msg in idle:
            if msg.delivered >= self._settings.max_deliver:
                await self._give_up(msg)  # not reached in the drain: dead-letter, never drop
        returned = [p for p in idle if p.delivered < self._settings.max_deliver]
        for msg in idle:
            self._in_hand.pop(msg.stream_seq, None)
        for seq, task in self._active.items():  # the calling handler's: settled by it
            if seq in self._in_hand and task not in self._detached:
                self._detached[task] = self._in_hand.pop(seq)
        # Those handlers run on past this stop: their entries must not make a
        # later stop take the next run's deliveries for theirs.
        self._active.clear()
        # An aggregate whose handler still runs keeps its (busy) key, so that a
        # restart queues the aggregate's commits behind that call.
        busy = {subject: key for subject, key in self._keys.items() if key.busy}
        for key in busy.values():
            key.heap.clear()
            key.blocked_seq = 0
        self._keys = busy
        self._ready.clear()
        try:
            for msg in returned:
                await bw.reply(self._wire, msg.reply, bw.nak_body(0))
            await bw.flush(self._wire)
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
        return {asyncio.current_task(), _handler_task.get()}

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
                for msg in list(self._in_hand.values()):
                    await bw.reply(self._wire, msg.reply, bw.PROGRESS)
            except StoreError as exc:
                log.warning("projector %s: in-progress ack while stopping: %s", self.name, exc)

    async def _give_up(self, msg: bw.Pulled) -> None:
        try:
            await self._publish_dead_letter(
                msg.subject,
                msg.data,
                msg.stream_seq,
                msg.delivered,
                "ProjectorStopped: the projector stopped before handling the last delivery",
            )
            await bw.reply(self._wire, msg.reply, bw.TERM + b" projector stopped")
        except StoreError as exc:
            log.error("projector %s: could not dead-letter #%d: %s", self.name, msg.stream_seq, exc)
            return
        self._in_hand.pop(msg.stream_seq, None)
        self._dead += 1

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
        await self._wire.js.consumer_delete(self._cfg.stream_name, settings.durable)
        for task in self._detached:  # their acks would settle the new consumer's replay
            self._detached[task] = None
        await provision_consumer(self._wire, self._cfg, settings)
        if was_running:
            await self.start()

    async def checkpoint(self) -> int:
        """Stream sequence of the consumer's ack floor (every commit up to it is acked)."""
        info = await self._wire.js.consumer_info(self._cfg.stream_name, self._settings.durable)
        return 0 if info is None else info.ack_floor.stream_seq

    async def delete(self) -> None:
        """Stop and remove the durable consumer (its checkpoint is lost)."""
        await self.stop()
        await self._wire.js.consumer_delete(self._cfg.stream_name, self._settings.durable)

    async def __aenter__(self) -> Projector:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- receiving -----------------------------------------------------------

    def _on_msg(self, msg: bw.Pulled) -> None:
        if msg.consumer != self._settings.durable:
            return
        self._no_leader = 0
        if self._stopping:
            # Arrived while stopping: hand it straight back.
            if msg.delivered < self._settings.max_deliver:
                self._send_soon(msg.reply, bw.nak_body(0))
            return
        part = self._settings.partition
        if not msg.subject.startswith(self._events) or (
            part is not None and zlib.crc32(msg.subject.encode()) % part[1] != part[0]
        ):
            # Another partition's commit, or no commit at all (a filter such as
            # `<prefix>.>` also matches the correlation index's entries).
            self._skipped += 1
            self._settled.set()
            self._send_soon(msg.reply, bw.ACK)
            return
        seq = msg.stream_seq
        known = seq in self._in_hand
        self._in_hand[seq] = msg  # a redelivery replaces the reply subject
        if not known:
            key = self._keys.get(msg.subject)
            if key is None:
                key = self._keys[msg.subject] = _Key()
            heapq.heappush(key.heap, seq)
            if key.blocked_seq == seq:
                key.blocked_seq = 0
            self._mark(msg.subject, key, time.monotonic())
        self._pump()
        self._wake.set()

    def _on_status(self, status: str, description: str) -> None:
        if status == "503":
            # No responders: the consumer has no leader (an election is under
            # way). Pulling again at once would spin; wait a moment.
            self._pull_after = time.monotonic() + NO_LEADER_PAUSE
            self._no_leader += 1
            if self._no_leader == 1:
                log.warning("projector %s: consumer has no leader, waiting", self.name)
            self._wake.set()
            return
        self._no_leader = 0
        if status == "409" and "deleted" in description.lower():
            # Sent when the durable is removed (its checkpoint with it), but
            # also when it leaves this server in a cluster: the loop asks.
            self._check_gone = True
        elif status not in ("404", "408", "423"):
            log.warning("projector %s: server says %s %s", self.name, status, description)
        self._wake.set()

    async def _confirm_gone(self) -> None:
        """After a 409 "Consumer Deleted": if the durable no longer exists, stop
        pulling and say so (re-creating it would replay from `start`)."""
        durable = self._settings.durable
        try:
            if await self._wire.js.consumer_info(self._cfg.stream_name, durable) is not None:
                self._check_gone = False
                return
        except StoreError as exc:  # unknown yet: asked again on a later pass
            log.warning("projector %s: is consumer %s still there? %s", self.name, durable, exc)
            return
        finally:
            self._gone_check = None
            self._wake.set()
        log.error(
            "projector %s: its consumer %s was deleted on the server; stopped pulling "
            "(provision it again and restart, or reset())",
            self.name,
            durable,
        )
        self._gone = StoreError(
            f"projector {self.name}: consumer {durable} was deleted on the server", code=409
        )
        self._settled.set()

    def _send_soon(self, subject: str, body: bytes) -> None:
        task = asyncio.create_task(bw.reply(self._wire, subject, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- dispatch ------------------------------------------------------------

    def _mark(self, subject: str, key: _Key, now: float) -> None:
        if key.runnable(now):
            heapq.heappush(self._ready, (key.heap[0], subject))

    def _pump(self) -> None:
        now = time.monotonic()
        limit = self._settings.concurrency
        while self._ready and self._running < limit:
            head, subject = heapq.heappop(self._ready)
            key = self._keys.get(subject)
            if key is None or not key.runnable(now) or key.heap[0] != head:
                continue
            if self._stopping and (self._halted or not self._last_delivery(head)):
                continue  # handed back (or dead-lettered) by stop()
            key.blocked_seq = 0
            key.busy = True
            self._running += 1
            seq = heapq.heappop(key.heap)
            task = asyncio.create_task(self._handle(subject, key, seq))
            self._active[seq] = task
            task.set_name("handler")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _last_delivery(self, seq: int) -> bool:
        msg = self._in_hand.get(seq)
        return msg is not None and msg.delivered >= self._settings.max_deliver

    def _settle(self, seq: int, msg: bw.Pulled) -> bw.Pulled | None:
        """Take the delivery a handler settles: its own if stop() detached it
        (None: nothing to settle), else the latest for `seq` (a redelivery
        carries a new reply subject)."""
        me = asyncio.current_task()
        if me in self._detached:
            return self._detached.pop(me)
        return self._in_hand.pop(seq, msg)

    async def _handle(self, subject: str, key: _Key, seq: int) -> None:
        _handler_task.set(asyncio.current_task())
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
                if msg.headers and tracing.HEADER in msg.headers:
                    # The handler runs as a child span of the append's trace.
                    with tracing.continue_from(msg.headers):
                        await self._handler(delivery)
                else:
                    await self._handler(delivery)
            except Exception as exc:  # noqa: BLE001 - any handler error is a failed delivery
                self._failed += 1
                settled = self._settle(seq, msg)
                if settled is not None:
                    await self._on_failure(key, seq, settled, exc)
            else:
                settled = self._settle(seq, msg)
                if settled is not None:
                    await bw.reply(self._wire, settled.reply, bw.ACK)
                self._handled += 1
        except AngzarrESError as exc:
            log.error("projector %s: could not settle %s #%d: %s", self.name, subject, seq, exc)
        finally:
            me = asyncio.current_task()
            if self._active.get(seq) is me:
                del self._active[seq]
            self._detached.pop(me, None)  # type: ignore[arg-type]
            self._settled.set()
            key.busy = False
            self._running -= 1
            # After a restart from within this handler the aggregate's key is
            # the new run's: leave it alone.
            if self._keys.get(subject) is key:
                if key.heap or key.blocked_seq:
                    self._mark(subject, key, time.monotonic())
                else:
                    del self._keys[subject]
            self._pump()
            self._wake.set()

    async def _on_failure(self, key: _Key, seq: int, msg: bw.Pulled, exc: Exception) -> None:
        s = self._settings
        if msg.delivered >= s.max_deliver:
            log.error(
                "projector %s: %s #%d failed on delivery %d of %d, dead-lettering: %r",
                self.name, msg.subject, seq, msg.delivered, s.max_deliver, exc,
            )  # fmt: skip
            await self._dead_letter(msg, exc)
            await bw.reply(self._wire, msg.reply, bw.TERM + b" " + _one_line(exc).encode()[:200])
            self._dead += 1
            return
        delay = s.backoff[min(msg.delivered, len(s.backoff)) - 1] if s.backoff else 0.0
        log.warning(
            "projector %s: %s #%d failed on delivery %d, retry in %.3gs: %r",
            self.name, msg.subject, seq, msg.delivered, delay, exc,
        )  # fmt: skip
        key.blocked_seq = seq
        key.blocked_until = time.monotonic() + delay + s.ack_wait + 1.0
        await bw.reply(self._wire, msg.reply, bw.nak_body(delay))

    async def _dead_letter(self, msg: bw.Pulled, exc: Exception) -> None:
        await self._publish_dead_letter(
            msg.subject, msg.data, msg.stream_seq, msg.delivered, _one_line(exc)
        )

    async def _on_exceeded(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        """The server gave up on a commit by itself (its last delivery expired
        unacked: a handler hung or a process died): dead-letter it from the stream."""
        try:
            advisory = _decode_exceeded(data)
        except msgspec.DecodeError:
            log.warning("projector %s: unreadable advisory on %s", self.name, subject)
            return
        stream = self._cfg.stream_name
        try:
            message = await self._wire.js.msg_get(stream, m.MsgGetRequest(seq=advisory.stream_seq))
            if message is None:
                log.error(
                    "projector %s: #%d is gone, cannot dead-letter it",
                    self.name,
                    advisory.stream_seq,
                )
                return
            await self._publish_dead_letter(
                message.subject,
                message.data,
                advisory.stream_seq,
                advisory.deliveries,
                "MaxDeliveriesExceeded: no ack within ack_wait on the last delivery",
            )
        except StoreError as exc:
            log.error(
                "projector %s: could not dead-letter #%d: %s", self.name, advisory.stream_seq, exc
            )
            return
        self._dead += 1
        self._settled.set()

    async def _publish_dead_letter(
        self, subject: str, data: bytes, stream_seq: int, deliveries: int, error: str
    ) -> None:
        prefix = self._cfg.subject_prefix
        head = f"{prefix}.events."
        domain = subject[len(head) :].split(".")[0] if subject.startswith(head) else ""
        stream = self._cfg.stream_name
        headers = {
            H_PROJECTOR: self.name,
            H_ERROR: error[:MAX_ERROR_HEADER],
            H_DELIVERIES: str(deliveries),
            H_SUBJECT: subject,
            H_STREAM: stream,
            H_STREAM_SEQ: str(stream_seq),
            # Several processes may dead-letter the same commit: keep one.
            m.H_MSG_ID: f"dlq-{stream}-{stream_seq}-{self._settings.durable}",
        }
        target = f"{prefix}.dlq.{domain or '_'}"
        if self._observer is not None:
            self._observer.dead_lettered(self.name)
        ack = await self._wire.publish_commit(target, data, headers, self._wire.timeout)
        if ack.error is not None:
            raise StoreError(f"dead-letter to {target}: {ack.error.description}")

    # -- the loop: pulls, in-progress acks, unblocking, stalls -----------------

    async def _loop(self) -> None:
        s = self._settings
        keepalive = max(s.ack_wait / 3, 0.05)
        next_keepalive = time.monotonic() + keepalive
        while not self._stopping:
            puller = self._puller
            if puller is None or self._gone is not None:
                return
            self._wake.clear()
            if self._check_gone and self._gone_check is None:
                # Asked aside: the in-progress acks must not wait for the answer.
                self._gone_check = asyncio.create_task(self._confirm_gone())
            try:
                if puller.stalled():
                    log.warning("projector %s: no heartbeat, pulling again", self.name)
                    puller.forget()
                have = puller.outstanding + len(self._in_hand)
                now = time.monotonic()
                if have <= self._buffer // 2 and now >= self._pull_after:
                    await puller.pull(self._buffer - have)
                if now >= next_keepalive:
                    next_keepalive = now + keepalive
                    for msg in list(self._in_hand.values()):
                        await bw.reply(self._wire, msg.reply, bw.PROGRESS)
                wake_at = next_keepalive
                if now < self._pull_after:
                    wake_at = min(wake_at, self._pull_after)
                for subject, key in list(self._keys.items()):
                    if not key.blocked_seq or key.busy:
                        continue
                    if now < key.blocked_until:
                        wake_at = min(wake_at, key.blocked_until)
                    elif key.heap:
                        self._mark(subject, key, now)
                    else:
                        del self._keys[subject]
                self._pump()
            except StoreError as exc:
                log.warning("projector %s: %s", self.name, exc)
                wake_at = time.monotonic() + 1.0
            timeout = max(0.0, min(wake_at - time.monotonic(), puller.heartbeat))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)


def _unset_none(value: object) -> object:
    """Absent, empty and the server's "none" policy compare equal."""
    return None if value in (None, "", "none") else value


class _Exceeded(msgspec.Struct, frozen=True):
    stream_seq: int = 0
    deliveries: int = 0


_decode_exceeded = msgspec.json.Decoder(_Exceeded).decode


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())
