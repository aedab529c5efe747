"""Filters in the per-domain layout: a consumer lives in one stream, so a
projector or catch-up subscription whose filter spans domains
(`<prefix>.events.>`, `<prefix>.events.*.*`, `<prefix>.>`) runs one lane per
domain stream, each a plain `Projector` or `CatchUp` with the same settings
(and, for a projector, the same durable consumer name in each stream).

Guarantees: each lane keeps its stream's order, so an aggregate's commits
are handled in order (an aggregate lives in one stream); there is no order
between domains, also with `concurrency=1` (which holds per lane). New domain
streams are found by listing the streams every `[bus.nats]
stream_discovery_interval` seconds (5 by default) while running; a lane made
after the projector's consumers first existed starts at its stream's first
commit (everything in a stream that appeared later is new to the projector),
so nothing of a new domain is missed. A filter confined to one domain reads
that domain's stream alone, created first if missing (as angzarr does before
starting a consumer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from angzarr_es._nats import Wire
from angzarr_es._observe import Observer
from angzarr_es._provision import create_domain_stream, domain_streams
from angzarr_es._streams import Streams
from angzarr_es.bus._catchup import CatchUp
from angzarr_es.bus._delivery import Delivery, Handler, SkipHandler, Start, check_handler
from angzarr_es.bus._projector import Projector
from angzarr_es.bus._settings import ProjectorSettings, ProjectorStats
from angzarr_es.config import NatsConfig
from angzarr_es.errors import StoreError

__all__ = [
    "SpanningCatchUp",
    "SpanningProjector",
    "make_catch_up",
    "make_projector",
    "stream_of",
]

log = logging.getLogger("angzarr_es")


def stream_of(cfg: NatsConfig, subject_filter: str) -> tuple[str, str] | None:
    """(stream, domain) a consumer with `subject_filter` lives in ("" for the
    single layout's stream), or None if the filter spans domain streams."""
    layout = Streams(cfg)
    if not layout.per_domain:
        return cfg.stream_name, ""
    domain = layout.domain_of_filter(subject_filter)
    return None if domain is None else (layout.events(domain), domain)


async def homes(wire: Wire, cfg: NatsConfig, subject_filter: str) -> list[str]:
    """The streams consumers with `subject_filter` live in now (a confined
    filter's domain stream is created if missing).

    Raises:
        StoreError: the server refused.
    """
    found = stream_of(cfg, subject_filter)
    if found is None:
        return [stream for _, stream in await domain_streams(wire, Streams(cfg))]
    stream, domain = found
    if domain:
        await create_domain_stream(wire, cfg, domain)
    return [stream]


def make_projector(
    wire: Wire,
    cfg: NatsConfig,
    settings: ProjectorSettings,
    handler: Handler,
    observer: Observer | None,
) -> Projector:
    """The projector for `settings`: one stream's, or lanes over domain streams.

    Raises:
        ValueError: a stream sequence as `start` for a filter spanning streams.
    """
    found = stream_of(cfg, settings.subject)
    if found is None:
        return SpanningProjector(wire, cfg, settings, handler, observer)
    stream, domain = found
    return Projector(wire, cfg, settings, handler, observer, stream=stream, domain=domain)


def make_catch_up(
    wire: Wire, cfg: NatsConfig, subject: str, start: Start, on_skip: SkipHandler | None
) -> CatchUp:
    """The catch-up subscription for `subject`: one stream's, or lanes over domain streams.

    Raises:
        ValueError: a stream sequence as `start` for a filter spanning streams.
    """
    found = stream_of(cfg, subject)
    if found is None:
        return SpanningCatchUp(wire, cfg, subject, start, on_skip=on_skip)
    stream, domain = found
    return CatchUp(wire, cfg, subject, start, on_skip=on_skip, stream=stream, domain=domain)


def _no_sequence(start: Start, subject: str) -> None:
    if isinstance(start, int):
        raise ValueError(
            f"start={start}: a stream sequence names a position in one stream, and "
            f"{subject} spans the per-domain layout's streams; use 'all', 'new' or a datetime"
        )


class SpanningProjector(Projector):
    """A projector over several domain streams (per-domain layout): one lane
    (a `Projector`, same settings and consumer name) per stream. `concurrency`
    applies per lane; per-aggregate order holds, order across domains does not."""

    def __init__(
        self,
        wire: Wire,
        cfg: NatsConfig,
        settings: ProjectorSettings,
        handler: Handler,
        observer: Observer | None = None,
    ) -> None:
        # Not Projector.__init__: every public method is this class's own.
        settings.check()
        check_handler(handler)
        _no_sequence(settings.start, settings.subject)
        self._wire = wire
        self._cfg = cfg
        self._settings = settings
        self._handler = handler
        self._observer = observer
        self._lanes: dict[str, Projector] = {}
        self._watch: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def name(self) -> str:
        return self._settings.name

    @property
    def settings(self) -> ProjectorSettings:
        return self._settings

    @property
    def streams(self) -> list[str]:
        """The streams it reads (one lane each)."""
        return sorted(self._lanes)

    @property
    def stats(self) -> ProjectorStats:
        lanes = [lane.stats for lane in self._lanes.values()]
        return ProjectorStats(
            handled=sum(s.handled for s in lanes),
            failed=sum(s.failed for s in lanes),
            dead_lettered=sum(s.dead_lettered for s in lanes),
            skipped=sum(s.skipped for s in lanes),
        )

    @property
    def in_hand(self) -> int:
        return sum(lane.in_hand for lane in self._lanes.values())

    @property
    def running(self) -> bool:
        return self._watch is not None and all(lane.running for lane in self._lanes.values())

    async def wait(
        self, predicate: Callable[[ProjectorStats], bool], timeout: float | None = None
    ) -> ProjectorStats:
        async with asyncio.timeout(timeout):
            while not predicate(stats := self.stats):
                lanes = list(self._lanes.values())
                for lane in lanes:
                    if lane._feed.gone is not None:
                        raise lane._feed.gone
                    lane._settled.clear()
                self._changed.clear()
                waits = [asyncio.create_task(lane._settled.wait()) for lane in lanes]
                waits.append(asyncio.create_task(self._changed.wait()))
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in waits:
                        task.cancel()
        return stats

    async def start(self) -> None:
        if self._watch is not None:
            return
        await self._discover(first=True)
        self._watch = asyncio.create_task(self._rediscover(), name=f"angzarr-lanes {self.name}")

    async def _discover(self, *, first: bool = False) -> None:
        """Start a lane for every domain stream that has none."""
        streams = await homes(self._wire, self._cfg, self._settings.subject)
        new = [s for s in streams if s not in self._lanes]
        if not new:
            return
        settings = self._settings
        if not first or await self._ran_before(streams):
            # The projector existed before these streams: all they hold is new to it.
            settings = msgspec.structs.replace(settings, start="all")
        for stream in new:
            lane = Projector(
                self._wire, self._cfg, settings, self._handler, self._observer, stream=stream
            )
            await lane.start()
            self._lanes[stream] = lane
            log.info("projector %s: reading stream %s", self.name, stream)
        self._changed.set()

    async def _ran_before(self, streams: list[str]) -> bool:
        durable = self._settings.durable
        for stream in streams:
            if await self._wire.js.consumer_info(stream, durable) is not None:
                return True
        return False

    async def _rediscover(self) -> None:
        while True:
            await asyncio.sleep(self._cfg.stream_discovery_interval)
            try:
                await self._discover()
            except StoreError as exc:
                log.warning("projector %s: listing the domain streams: %s", self.name, exc)

    async def _stop_watch(self) -> bool:
        watch, self._watch = self._watch, None
        if watch is None:
            return False
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        return True

    async def stop(self, *, drain_timeout: float | None = 30.0) -> None:
        await self._stop_watch()
        await asyncio.gather(
            *(lane.stop(drain_timeout=drain_timeout) for lane in self._lanes.values())
        )

    def runs(self, task: asyncio.Task[Any]) -> bool:
        return any(lane.runs(task) for lane in self._lanes.values())

    async def settle(self, timeout: float | None = 30.0) -> None:
        await asyncio.gather(*(lane.settle(timeout) for lane in self._lanes.values()))

    async def reset(self, start: Start = "all") -> None:
        _no_sequence(start, self._settings.subject)
        self._settings = msgspec.structs.replace(self._settings, start=start)
        was_running = await self._stop_watch()
        for lane in self._lanes.values():
            await lane.reset(start)
        if was_running:
            self._watch = asyncio.create_task(self._rediscover(), name=f"angzarr-lanes {self.name}")

    async def checkpoint(self) -> int:
        """The ack floor of its one stream.

        Raises:
            ValueError: it reads several streams (use `checkpoints()`).
        """
        if len(self._lanes) != 1:
            raise ValueError(
                f"projector {self.name} reads {len(self._lanes)} streams; use checkpoints()"
            )
        return await next(iter(self._lanes.values())).checkpoint()

    async def checkpoints(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for stream, lane in sorted(self._lanes.items()):
            out[stream] = await lane.checkpoint()
        return out

    async def delete(self) -> None:
        await self._stop_watch()
        for lane in self._lanes.values():
            await lane.delete()
        self._lanes.clear()


class SpanningCatchUp(CatchUp):
    """A catch-up subscription over several domain streams (per-domain
    layout): one `CatchUp` per stream, merged as they come; each stream's
    order (so each aggregate's) is kept."""

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
        _no_sequence(start, subject)
        super().__init__(wire, cfg, subject, start, window=window, on_skip=on_skip)
        self._merged: asyncio.Queue[Delivery | BaseException | None] = asyncio.Queue(window)
        self._lanes: dict[str, CatchUp] = {}
        self._pumps: set[asyncio.Task[None]] = set()
        self._watch: asyncio.Task[None] | None = None
        self._opened = False

    @property
    def streams(self) -> list[str]:
        """The streams it reads."""
        return sorted(self._lanes)

    async def open(self) -> None:
        if self._opened:
            return
        self._opened = True
        await self._discover(first=True)
        self._watch = asyncio.create_task(self._rediscover(), name=f"angzarr-lanes {self.subject}")

    async def _discover(self, *, first: bool = False) -> None:
        streams = await homes(self._wire, self._cfg, self._subject)
        start = self._start if first else "all"  # later streams: all of it is new
        for stream in streams:
            if stream in self._lanes or self._closed:
                continue
            lane = CatchUp(
                self._wire, self._cfg, self._subject, start, on_skip=self._on_skip, stream=stream
            )
            await lane.open()
            self._lanes[stream] = lane
            pump = asyncio.create_task(self._pump(lane), name=f"angzarr-lane {stream}")
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, lane: CatchUp) -> None:
        try:
            async for delivery in lane:
                await self._merged.put(delivery)
        except Exception as exc:  # noqa: BLE001 - handed to the reader
            await self._merged.put(exc)

    async def _rediscover(self) -> None:
        while not self._closed:
            await asyncio.sleep(self._cfg.stream_discovery_interval)
            try:
                await self._discover()
            except StoreError as exc:
                log.warning("subscription to %s: listing the domain streams: %s", self.subject, exc)

    async def __anext__(self) -> Delivery:
        if self._closed:
            raise StopAsyncIteration
        if not self._opened:
            await self.open()
        got = await self._merged.get()
        if got is None:  # closed
            self._merged.put_nowait(None)  # for any other reader
            raise StopAsyncIteration
        if isinstance(got, BaseException):
            raise got
        return got

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await asyncio.gather(*(lane.aclose() for lane in self._lanes.values()))
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        while not self._merged.empty():
            self._merged.get_nowait()
        self._merged.put_nowait(None)  # a reader waiting in another task ends
