"""The in-memory bus: the world's commits delivered as `Delivery`s, like
JetStream mode delivers them, to catch-up subscriptions, live subscriptions
and durable projectors.

What it keeps from the real bus: every committed append is delivered once
per reader, in stream order, from where `start` says; a projector's
checkpoint survives its restart (it lives in the world, under the
projector's name); a handler that raises is called again, with a higher
`delivery_count`, up to `max_deliver` times, and the commit is then counted
as dead-lettered (`InMemoryClient.dead_letters`). What it leaves out:
timing. Handlers run one at a time (whatever `concurrency`), retries come at
once (no `backoff`, no `ack_wait`), and nothing is ever redelivered because
a handler was slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Awaitable, Callable

import msgspec

from angzarr_es._durables import filter_hint
from angzarr_es._lifecycle import OpensOnEnter, StartsOnEnter
from angzarr_es.bus import (
    Delivery,
    Handler,
    ProjectorSettings,
    ProjectorStats,
    SkipHandler,
    Start,
    Subscription,
)
from angzarr_es.bus._delivery import check_handler, check_skip_handler, decode_delivery
from angzarr_es.config import NatsConfig
from angzarr_es.errors import ConfigError, ConsumerConfigError, StoreUnavailable
from angzarr_es.filters import FilterLike, resolve
from angzarr_es.pb import core_pb2
from angzarr_es.subjects import AggregateId, validate_domain
from angzarr_es.testing._world import Stored, World

__all__ = ["DeadLetter", "InMemoryBus", "InMemoryCatchUp", "InMemoryProjector"]

log = logging.getLogger("angzarr_es")


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A commit a projector gave up on after its last delivery failed."""

    projector: str
    subject: str
    stream_sequence: int
    deliveries: int
    error: str
    """`Type: message` of the last failure."""


def _delivery(world: World, stored: Stored, count: int = 0) -> Delivery:
    return decode_delivery(
        world.prefix,
        stored.subject,
        stored.data,
        stream_sequence=stored.seq,
        delivery_count=count,
    )


class InMemoryCatchUp(OpensOnEnter):
    """`CatchUp` in memory: the filter's commits from `start`, then live ones."""

    def __init__(
        self, world: World, subject: str, start: Start, *, on_skip: SkipHandler | None = None
    ) -> None:
        check_skip_handler(on_skip)  # every commit decodes here: never called
        self._world = world
        self._subject = subject
        self._start = start
        self._position = world.position_for(start)  # validates `start`
        self._opened = False
        self._closed = False
        self._wake = asyncio.Event()

    @property
    def subject(self) -> str:
        """The subject filter being followed."""
        return self._subject

    async def open(self) -> None:
        """Start following (done by the first `__anext__` otherwise)."""
        if not self._opened:
            self._opened = True
            self._position = self._world.position_for(self._start)
            self._world.waiters.add(self._wake)

    def __aiter__(self) -> InMemoryCatchUp:
        return self

    async def __anext__(self) -> Delivery:
        await self.open()
        while True:
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            stored = self._world.next_after(self._position, self._subject)
            if stored is not None:
                self._position = stored.seq
                return _delivery(self._world, stored, 1)
            if self._world.closed:
                raise StoreUnavailable(f"subscription to {self._subject}: the client was closed")
            await self._wake.wait()

    async def aclose(self) -> None:
        """Stop following."""
        self._closed = True
        self._wake.set()  # an iteration waiting in another task ends
        self._world.waiters.discard(self._wake)


class InMemoryProjector(StartsOnEnter):
    """`Projector` in memory; make it with `InMemoryClient.projector(...)`."""

    def __init__(
        self,
        world: World,
        settings: ProjectorSettings,
        handler: Handler,
        dead_letters: list[DeadLetter],
    ) -> None:
        settings.check()
        check_handler(handler)
        self._world = world
        self._settings = settings
        self._handler = handler
        self._dead_letters = dead_letters
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._handled = self._failed = self._dead = self._skipped = 0

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

    @property
    def running(self) -> bool:
        """Whether it is handling commits."""
        return self._task is not None and not self._task.done()

    async def wait(
        self, predicate: Callable[[ProjectorStats], bool], timeout: float | None = None
    ) -> ProjectorStats:
        """Wait until `predicate(stats)` holds (see `Projector.wait`).

        Raises:
            TimeoutError: not within `timeout` seconds.
        """
        async with asyncio.timeout(timeout):
            while not predicate(stats := self.stats):
                self._settled.clear()
                await self._settled.wait()
        return stats

    async def start(self) -> None:
        """Create the durable position (at `start`) if it is new, then start handling.

        Raises:
            ConsumerConfigError: a projector of this name exists with another filter.
        """
        if self.running:
            return
        self._world.check_open()
        self._durable()
        self._stopping = False
        self._world.waiters.add(self._wake)
        self._task = asyncio.create_task(self._loop(), name=f"in-memory projector {self.name}")

    def _durable(self) -> int:
        """The durable position (created at `start` when missing), checked against our filter."""
        name, wanted = self._settings.durable, self._settings.subject
        held = self._world.durables.get(name)
        if held is None:
            held = (wanted, self._world.position_for(self._settings.start))
            self._world.durables[name] = held
        elif held[0] != wanted:
            raise ConsumerConfigError(
                f"consumer {name} exists with a conflicting definition: filter_subject: "
                f"{held[0]!r} (wanted {wanted!r}). "
                + filter_hint(self._world.prefix, held[0], wanted)
                + "Delete it or choose another projector name."
            )
        return held[1]

    async def stop(self, *, drain_timeout: float | None = 30.0) -> None:
        """Stop after the running handler call (waited for up to `drain_timeout`;
        from a handler, at once: that call still settles its commit)."""
        task = self._task
        self._stopping = True
        self._wake.set()
        self._world.waiters.discard(self._wake)
        if task is None or task is asyncio.current_task():
            return
        done, _ = await asyncio.wait({task}, timeout=drain_timeout)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None

    async def reset(self, start: Start = "all") -> None:
        """Replay from `start`: the checkpoint is dropped; a running projector restarts."""
        settings = msgspec.structs.replace(self._settings, start=start)
        settings.check()
        was_running = self.running
        await self.stop()
        self._settings = settings
        self._forget()
        self._durable()
        if was_running:
            await self.start()

    async def checkpoint(self) -> int:
        """Stream sequence of the last commit settled in order (0: none)."""
        held = self._world.durables.get(self._settings.durable)
        return 0 if held is None else held[1]

    async def delete(self) -> None:
        """Stop, and forget the checkpoint."""
        await self.stop()
        self._forget()

    def _forget(self) -> None:
        name = self._settings.durable
        self._world.durables.pop(name, None)
        self._world.delivered = {k: v for k, v in self._world.delivered.items() if k[0] != name}

    async def _loop(self) -> None:
        s = self._settings
        while not self._stopping:
            self._wake.clear()
            position = self._durable()
            stored = self._world.next_after(position, s.subject)
            if stored is None:
                await self._wake.wait()
                continue
            part = s.partition
            if part is not None and zlib.crc32(stored.subject.encode()) % part[1] != part[0]:
                self._skipped += 1
            elif not await self._handle(stored):
                return  # stopped between deliveries: the commit comes back next time
            self._world.durables[s.durable] = (s.subject, stored.seq)
            self._world.delivered.pop((s.durable, stored.seq), None)
            self._settled.set()

    async def _handle(self, stored: Stored) -> bool:
        """Deliver one commit until it is handled or dead-lettered; False if
        the projector stopped first."""
        key = (self._settings.durable, stored.seq)
        while True:
            count = self._world.delivered.get(key, 0) + 1
            self._world.delivered[key] = count
            try:
                await self._handler(_delivery(self._world, stored, count))
            except Exception as exc:  # noqa: BLE001 - any handler error is a failed delivery
                self._failed += 1
                self._settled.set()
                if count >= self._settings.max_deliver:
                    error = f"{type(exc).__name__}: {exc}"
                    log.error("projector %s: %s dead-lettered: %s", self.name, stored.seq, error)
                    self._dead_letters.append(
                        DeadLetter(
                            projector=self.name,
                            subject=stored.subject,
                            stream_sequence=stored.seq,
                            deliveries=count,
                            error=error,
                        )
                    )
                    self._dead += 1
                    return True
                if self._stopping:
                    return False
                continue
            self._handled += 1
            return True


class InMemoryBus:
    """`Bus` in memory (JetStream mode): live subscriptions over the world's commits."""

    def __init__(self, world: World, cfg: NatsConfig) -> None:
        self._world = world
        self._cfg = cfg
        # Open subscriptions, closed by InMemoryClient.close().
        self.subscriptions: set[Subscription] = set()

    @property
    def jetstream(self) -> bool:
        """Always True: every append is published, as in JetStream mode."""
        return True

    def subject(self, domain: str, root: AggregateId) -> str:
        """The subject an aggregate's commits travel on."""
        return self._world.subjects.aggregate(validate_domain(domain), root)

    def filter(self, f: FilterLike) -> str:
        """The subject filter for `f` under this client's prefix."""
        return resolve(f, self._world.prefix)

    async def publish(self, book: core_pb2.EventBook, *, root: AggregateId | None = None) -> None:
        """Refused, as in JetStream mode: every append is already published.

        Raises:
            ConfigError: always.
        """
        raise ConfigError(
            "bus.publish() is for core mode; in memory, as in JetStream mode, every "
            "committed append is published"
        )

    async def subscribe(
        self,
        f: FilterLike,
        handler: Handler,
        *,
        start: Start = "new",
        on_skip: SkipHandler | None = None,
    ) -> Subscription:
        """Call `handler` for every commit matching `f` from `start`, one at a
        time, in order; a handler that raises is logged and the next commit is
        delivered (see `Bus.subscribe`).

        Raises:
            TypeError: `handler` is not an `async def`, or `on_skip` is.
            ValueError: an unknown `start`.
        """
        check_handler(handler)
        reader = InMemoryCatchUp(self._world, self.filter(f), start, on_skip=on_skip)
        await reader.open()

        async def pump() -> None:
            async for delivery in reader:
                try:
                    await handler(delivery)
                except Exception:
                    log.exception("subscription handler failed on %s", delivery.subject)

        task = asyncio.create_task(pump(), name=f"in-memory subscribe {reader.subject}")

        async def close() -> None:
            await reader.aclose()
            if task is not asyncio.current_task():
                with contextlib.suppress(asyncio.CancelledError, StoreUnavailable):
                    await task

        return self._keep(close)

    def _keep(self, close: Callable[[], Awaitable[None]]) -> Subscription:
        sub = Subscription(close, lambda: self.subscriptions.discard(sub))
        self.subscriptions.add(sub)
        return sub

    async def provision(self) -> None:
        """Create the durable position of every `[[bus.nats.consumers]]` entry
        that has none (at the start of the stream)."""
        for spec in self._cfg.consumers:
            subject = resolve(spec.filter, self._world.prefix)
            self._world.durables.setdefault(spec.name, (subject, 0))
