"""The benchmark run: start a nats-server, measure every operation against its
baselines, write JSON, Markdown and a chart; with `--cluster`, measure the
appends, the cold and hot loads and the layouts again on a three-server R3
cluster."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import shlex
import sys
import tempfile
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from angzarr_es.config import redact_url
from angzarr_es.embedded import EmbeddedCluster, EmbeddedServer
from benchmarks import report
from benchmarks.appends import bench_appends, bench_conflicts
from benchmarks.cluster import run_cluster
from benchmarks.context import Run, Server, connect
from benchmarks.harness import filesystem, machine
from benchmarks.hot import bench_hot
from benchmarks.layouts import bench_layouts
from benchmarks.loads import bench_loads
from benchmarks.memory import bench_cache_memory, bench_iter
from benchmarks.sizes import PRESETS, Sizes
from benchmarks.writers import bench_writers

T = TypeVar("T")
LOOPS = ("asyncio", "uvloop")

# A comma that starts another URL (`--url nats://a:4222,nats://b:4222`); one
# inside a DSN's password is not followed by a scheme.
_NEXT_URL = re.compile(r",(?=[^,]*://)")
PUBLISHED = Path("docs/benchmarks")
SCRATCH = Path(tempfile.gettempdir()) / "angzarr-es-bench"


async def run_all(args: argparse.Namespace, sizes: Sizes, server: Server, tmp: Path) -> Run:
    async with connect(server, sizes, tmp, with_peers=args.peers, pg_dsn=args.pg_dsn) as run:
        await bench_appends(run)
        await bench_conflicts(run)
        await bench_loads(run)
        await bench_hot(run)
        await bench_layouts(run, server)
        await bench_writers(run)
        await bench_iter(run)
        await bench_cache_memory(run)
    return run


def run_on(loop: str, coro: Coroutine[Any, Any, T]) -> T:
    """`coro` on asyncio's own event loop or uvloop's."""
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer samples (under a minute)")
    size.add_argument("--tiny", action="store_true", help="a few samples (smoke test)")
    parser.add_argument(
        "--sync-always", action="store_true", help="nats-server with sync_interval: always"
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("NATS_URL") or None,
        help="measure the server at this URL (of a comma-separated list, the first; with "
        "--replicas, its cluster) instead of starting one (default: $NATS_URL); the run's "
        "streams get names of their own and are deleted after",
    )
    parser.add_argument(
        "--replicas", type=int, default=1, help="replicas of the run's streams (with --url)"
    )
    parser.add_argument("--pg-dsn", help="PostgreSQL DSN for the eventsourcing peer")
    parser.add_argument(
        "--no-peers", dest="peers", action="store_false", help="skip the eventsourcing peers"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"where to write results (default: {PUBLISHED} for a full run on the server it "
        f"starts, the published results; {SCRATCH} for any other)",
    )
    parser.add_argument("--no-chart", dest="chart", action="store_false", help="skip the PNG")
    parser.add_argument(
        "--loop",
        choices=LOOPS,
        default="asyncio",
        help="the event loop (uvloop: pip install uvloop)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also measure appends, cold and hot loads and the two stream layouts (with "
        "where the domain streams' leaders go) on a three-server R3 cluster started on loopback",
    )
    args = parser.parse_args(argv)
    if args.out is None:
        # Only the full runs on our own server are published: the others
        # would leave stray files in a checkout's docs/.
        full = not (args.quick or args.tiny or args.url)
        args.out = PUBLISHED if full else SCRATCH
    if args.url and args.sync_always:
        parser.error("--sync-always configures the server this run starts; not with --url")
    if args.url and args.cluster:
        parser.error("--cluster starts a cluster of its own; not with --url")
    if args.replicas != 1 and not args.url:
        parser.error("--replicas needs a cluster: give its servers with --url")
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    return args


def command_line(argv: Sequence[str]) -> str:
    """The command that made a run, for its results, with any password hidden
    (in each URL of a comma-separated list, and in a PostgreSQL DSN)."""
    shown = (",".join(map(redact_url, _NEXT_URL.split(arg))) for arg in argv)
    return shlex.join(["python", "-m", "benchmarks", *shown])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    preset = "tiny" if args.tiny else "quick" if args.quick else "full"
    sizes = PRESETS[preset]
    mode = "external" if args.url else "sync-always" if args.sync_always else "default"
    meta = machine()
    meta["preset"] = preset
    meta["command"] = command_line(sys.argv[1:] if argv is None else argv)
    meta["started"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    meta["loop"] = args.loop
    t0 = time.perf_counter()
    cluster: Run | None = None
    with tempfile.TemporaryDirectory(prefix="angzarr-bench-") as tmp:
        if args.url:
            server = Server.elsewhere(args.url, args.replicas)
            meta["nats_mode"] = (
                f"the server at {redact_url(server.url)}, its own storage and sync "
                f"settings, R{args.replicas} streams"
            )
            meta["storage"] = "the server's own"
            print(f"benchmarking {meta['nats_mode']}; streams {server.stream}, deleted after")
            run = run_on(args.loop, run_all(args, sizes, server, Path(tmp)))
            meta["nats-server"] = run.server_version
        else:
            meta["nats_mode"] = (
                "file store, sync_interval: always"
                if args.sync_always
                else "file store, default sync"
            )
            meta["storage"] = filesystem(tempfile.gettempdir())
            with EmbeddedServer(
                sync_always=args.sync_always, store_dir=Path(tmp) / "nats"
            ) as embedded:
                print(f"nats-server {meta['nats-server']} at {embedded.url} ({meta['nats_mode']})")
                run = run_on(args.loop, run_all(args, sizes, Server(embedded.url), Path(tmp)))
            if args.cluster:
                print("three-server R3 cluster on loopback", flush=True)
                with EmbeddedCluster(
                    3,
                    root=Path(tmp) / "cluster",
                    name="angzarr-bench",
                    sync_always=args.sync_always,
                ) as three:
                    cluster = run_on(
                        args.loop, run_cluster(sizes, three.urls, list(three.servers), Path(tmp))
                    )
    meta["seconds"] = f"{time.perf_counter() - t0:.1f}"
    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    suffix = mode if preset == "full" else f"{mode}-{preset}"
    if args.loop != "asyncio":
        suffix += f"-{args.loop}"
    paths = report.write(
        args.out,
        suffix,
        meta,
        run.notes,
        run.results,
        run.memory,
        cache_memory=run.cache_memory,
        leaders=run.leaders,
        sync_always=args.sync_always,
        chart_png=args.chart,
    )
    if cluster is not None:
        cluster_meta = {
            **meta,
            "nats_mode": f"R3 cluster of three servers on loopback ({meta['nats_mode']})",
        }
        paths += report.write(
            args.out,
            suffix.replace(mode, "cluster", 1),
            cluster_meta,
            cluster.notes,
            cluster.results,
            {},
            leaders=cluster.leaders,
            sync_always=args.sync_always,
            chart_png=args.chart,
        )
    if preset == "full" and not args.url and args.loop == "asyncio":
        readme = report.update_readme(args.out)
        if readme is not None:
            paths.append(readme)
    for path in paths:
        print(f"wrote {path}")
    return 0
