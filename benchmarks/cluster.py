"""`python -m benchmarks --cluster`: the appends, the cold and hot loads and
the two stream layouts (with where the domain streams' leaders went) on R3
streams of three nats-servers clustered on loopback
(`angzarr_es.embedded.EmbeddedCluster`, started by `run`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats

from benchmarks.appends import bench_appends
from benchmarks.context import Run, Server, connect
from benchmarks.hot import bench_hot
from benchmarks.layouts import bench_layouts
from benchmarks.loads import bench_loads
from benchmarks.sizes import Sizes


async def run_cluster(sizes: Sizes, urls: list[str], names: list[str], tmp: Path) -> Run:
    """The appends, the cold and hot loads and the layouts on R3 streams, every
    contender connected to the first server (the stream leader may be any of
    the three); `names` are the servers' names, in the order of `urls`."""
    await _jetstream_ready(urls[0])
    server = Server(urls[0], replicas=3, servers=tuple(names))
    async with connect(server, sizes, tmp, with_peers=False, pg_dsn=None) as run:
        run.notes.append(
            f"R3 streams on three nats-servers on loopback; every client connected to "
            f"{urls[0]} (the streams' leader may be another server)"
        )
        await bench_appends(run)
        await bench_loads(run)
        await bench_hot(run)
        await bench_layouts(run, server)
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
