"""`python -m benchmarks --cluster`: three nats-servers clustered on loopback,
each with JetStream and its own store directory, for R3 streams.

Routes must name their peers' ports up front, so the ports are picked by
binding port-0 sockets first (free a moment ago; a clash fails the start,
which says so).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import nats

from angzarr_es.embedded import EmbeddedServer
from angzarr_es.errors import StoreUnavailable
from benchmarks.appends import bench_appends
from benchmarks.context import Run, Server, connect
from benchmarks.hot import bench_hot
from benchmarks.loads import bench_loads
from benchmarks.sizes import Sizes

SIZE = 3


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LoopbackCluster:
    """Three clustered nats-servers under `root`; `urls` once started."""

    def __init__(self, root: Path, *, sync_always: bool = False) -> None:
        ports = _free_ports(2 * SIZE)
        clients, routes = ports[:SIZE], ports[SIZE:]
        peers = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
        self.servers = [
            EmbeddedServer(
                store_dir=root / f"n{i + 1}",
                port=clients[i],
                monitor_port=None,
                name=f"n{i + 1}",
                sync_always=sync_always,
                extra_config=(
                    f"cluster {{\n  name: angzarr-bench\n  listen: 127.0.0.1:{routes[i]}\n"
                    f"  routes: [{peers}]\n}}\n"
                ),
                ready_timeout=30.0,
            )
            for i in range(SIZE)
        ]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def __enter__(self) -> LoopbackCluster:
        # Side by side: a clustered server reports ready only once it sees its routes.
        errors: list[StoreUnavailable] = []

        def start(server: EmbeddedServer) -> None:
            try:
                server.start()
            except StoreUnavailable as exc:  # raised below, after the others stop
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(s,)) for s in self.servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.stop()
            raise errors[0]
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def run_cluster(sizes: Sizes, urls: list[str], tmp: Path) -> Run:
    """The appends and the cold and hot loads on R3 streams, every contender
    connected to the first server (the stream leader may be any of the three)."""
    await _jetstream_ready(urls[0])
    server = Server(urls[0], replicas=3)
    async with connect(server, sizes, tmp, with_peers=False, pg_dsn=None) as run:
        run.notes.append(
            f"R3 streams on three nats-servers on loopback; every client connected to "
            f"{urls[0]} (the streams' leader may be another server)"
        )
        await bench_appends(run)
        await bench_loads(run)
        await bench_hot(run)
    return run


async def _jetstream_ready(url: str, timeout: float = 60.0) -> None:
    """Wait until a new cluster has elected its JetStream meta leader."""
    nc = await nats.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = await nc.request("$JS.API.INFO", b"", timeout=2.0)
                if b'"error"' not in reply.data:
                    return
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the cluster's JetStream was not ready in {timeout:.0f} s")
            # Polling interval while the meta leader is elected (re-checked).
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
