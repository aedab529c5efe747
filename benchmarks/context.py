"""What every case works with: the server measured, the connections to it (a
`Run`), and how a case times its contenders and keeps the results."""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec

import angzarr_es
from angzarr_es.config import Config, NatsConfig
from angzarr_es.store import EventStore
from benchmarks import peers
from benchmarks.connection import connection, nats_options
from benchmarks.contenders import WIRE
from benchmarks.harness import Case, Measured, measure
from benchmarks.raw import RawClient
from benchmarks.sizes import Sizes
from benchmarks.wire import Unsupported, WireClient

STREAM = "bench-events"
PREFIX = "bench"
DOMAIN = "player"
# The hot-aggregate cache's default bound.
HOT_CACHE_BYTES = NatsConfig().cache_bytes


def config(
    url: str,
    replay: str,
    stream: str = STREAM,
    prefix: str = PREFIX,
    replicas: int = 1,
    cache_bytes: int = 0,
    layout: Literal["single", "per-domain"] = "single",
) -> Config:
    """The client configuration every contender built on angzarr_es uses: without
    the hot-aggregate cache unless `cache_bytes` is given (the cases of the cache
    use a client of their own, so that every other row measures what it did),
    in the single stream layout unless told."""
    nats = msgspec.structs.replace(
        connection(url),
        stream_name=stream,
        stream_layout=layout,
        subject_prefix=prefix,
        replicas=replicas,
        replay="consumer" if replay == "consumer" else "direct",
        request_timeout=10.0,
        cache_bytes=cache_bytes,
    )
    return Config(bus=msgspec.structs.replace(Config().bus, nats=nats))


@dataclass(frozen=True, slots=True)
class Server:
    """The server a run measures, and the names its streams get there."""

    url: str
    external: bool = False
    replicas: int = 1
    stream: str = STREAM
    prefix: str = PREFIX
    servers: tuple[str, ...] = ()
    """The cluster's server names, when this run started it."""

    @classmethod
    def elsewhere(cls, url: str, replicas: int) -> Server:
        """A server this run did not start: streams named for this run alone,
        so that deleting them afterwards touches nothing else. Every contender
        connects to the first URL given, so none is a route hop closer to the
        stream leader than another."""
        tag = uuid.uuid4().hex[:8]
        first = url.split(",")[0].strip()
        return cls(first, True, replicas, f"bench-{tag}-events", f"bench-{tag}")

    def config(self, replay: str, cache_bytes: int = 0) -> Config:
        return config(self.url, replay, self.stream, self.prefix, self.replicas, cache_bytes)


class LeaderSpread(msgspec.Struct, frozen=True, kw_only=True):
    """Where a cluster put the leaders of new R`replicas` streams."""

    replicas: int
    leaders: dict[str, str]
    """Stream -> the server leading it."""
    per_server: dict[str, int]
    """Server -> how many of the streams it leads (every server of the cluster
    when the run knows them, those leading none too)."""


@dataclass
class Run:
    """Everything one run talks to."""

    sizes: Sizes
    url: str
    ours: angzarr_es.Client
    ours_consumer: angzarr_es.Client
    rival: angzarr_es.Client
    hot: angzarr_es.Client
    """With the hot-aggregate cache at its default size."""
    raw: RawClient
    wire: WireClient | None
    recorders: list[peers.Recorder]
    repositories: list[peers.CachedRepository]
    codec_only: peers.CodecOnly
    stream: str = STREAM
    prefix: str = PREFIX
    results: list[Measured] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)
    cache_memory: dict[str, dict[str, float]] = field(default_factory=dict)
    server_version: str = ""
    leaders: LeaderSpread | None = None

    @property
    def store(self) -> EventStore:
        return self.ours.store(DOMAIN)

    def keep(self, measured: list[Measured]) -> None:
        self.results.extend(measured)
        for m in measured:
            s = m.stats
            print(
                f"  {s.op:<41} {s.contender:<26} p50 {s.p50:9.1f}us  p99 {s.p99:9.1f}us"
                f"  {s.ops_per_s:9.0f}/s",
                flush=True,
            )

    async def timed(self, op: str, cases: Sequence[Case], samples: int, events: int = 1) -> None:
        s = self.sizes
        self.keep(
            await measure(
                op,
                cases,
                samples=samples,
                rounds=min(s.rounds, samples),
                warmup=s.warmup,
                events_per_op=events,
            )
        )


def sync(fn: Callable[[int], object]) -> Callable[[int], Awaitable[object]]:
    """A synchronous contender (the peers, the codec) as a case to time."""

    async def run(i: int) -> object:
        return fn(i)

    return run


@contextlib.asynccontextmanager
async def connect(
    server: Server, sizes: Sizes, tmp: Path, *, with_peers: bool, pg_dsn: str | None
) -> AsyncIterator[Run]:
    """Every connection a run measures through, closed (and, on a server the run
    did not start, its streams deleted) however the run ends."""
    url = server.url
    async with contextlib.AsyncExitStack() as stack:
        # Each cleanup is registered as soon as there is something to clean up,
        # so a failure part way leaves no connection and (elsewhere) no stream.
        ours = await angzarr_es.connect(config=server.config("direct"))
        stack.push_async_callback(ours.close)
        if server.external:
            names = (server.stream, ours.config.nats.snapshot_stream)
            stack.push_async_callback(drop_streams, ours, names)
        await ours.provision()
        ours_consumer = await angzarr_es.connect(config=server.config("consumer"))
        stack.push_async_callback(ours_consumer.close)
        rival = await angzarr_es.connect(config=server.config("direct"))
        stack.push_async_callback(rival.close)
        hot = await angzarr_es.connect(config=server.config("direct", HOT_CACHE_BYTES))
        stack.push_async_callback(hot.close)
        raw = await RawClient.connect(url, server.stream, **nats_options(ours.config.nats))
        stack.push_async_callback(raw.close)
        recorders: list[peers.Recorder] = []
        notes: list[str] = []
        wire: WireClient | None = None
        try:
            wire = await WireClient.connect(url, server.stream)
            stack.push_async_callback(wire.close)
        except Unsupported as exc:
            notes.append(f"no {WIRE} rows: {exc}")
        repositories: list[peers.CachedRepository] = []
        if with_peers and peers.available():
            recorders.append(peers.Recorder.sqlite(tmp / "eventsourcing.sqlite"))
            stack.callback(recorders[0].close)
            notes.append(recorders[0].settings())
            repositories.append(peers.CachedRepository.sqlite(tmp / "eventsourcing-app.sqlite"))
            stack.callback(repositories[0].close)
            found, why = peers.find_postgres(pg_dsn)
            notes.append(why)
            if found:
                recorders.append(peers.Recorder.postgres(found))
                stack.callback(recorders[-1].close)
                repositories.append(peers.CachedRepository.postgres(found))
                stack.callback(repositories[-1].close)
        elif with_peers:
            notes.append("eventsourcing is not installed: pip install 'angzarr-es[bench]'")
        yield Run(
            sizes=sizes,
            url=url,
            ours=ours,
            ours_consumer=ours_consumer,
            rival=rival,
            hot=hot,
            raw=raw,
            wire=wire,
            recorders=recorders,
            repositories=repositories,
            codec_only=peers.CodecOnly(DOMAIN),
            stream=server.stream,
            prefix=server.prefix,
            notes=notes,
            server_version=raw.server_version,
        )


async def drop_streams(client: angzarr_es.Client, names: Sequence[str]) -> None:
    """Delete the run's streams on a server it did not start; say so if one stays."""
    for name in names:
        try:
            await client._wire.js.stream_delete(name)
        except Exception as exc:  # noqa: BLE001 - the other stream and the report go on
            print(f"could not delete stream {name}: {exc}", file=sys.stderr)
