"""Streaming and memory: one big aggregate iterated or loaded whole, each in a
child process (`benchmarks.memchild`) so its peak RSS is its own; and the
hot-aggregate cache's memory, per cached event and under many aggregates
(`benchmarks.cachechild`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import msgspec

from benchmarks.commits import commit, event
from benchmarks.context import DOMAIN, Run
from benchmarks.loads import fill

PER_EVENT = "hot cache, aggregates of 10 one-event commits"
BOUND = "hot cache, aggregates of 1 commit, beyond the bound"


async def bench_iter(run: Run) -> None:
    s = run.sizes
    print(f"iter over {s.iter_events} events (child process)", flush=True)
    root = uuid.uuid4()
    await fill(run, root, s.iter_events, 10)
    for mode in ("iter", "load"):
        for replay in ("direct", "consumer"):
            argv = [
                sys.executable,
                "-m",
                "benchmarks.memchild",
                run.url,
                run.stream,
                run.prefix,
                DOMAIN,
                str(root),
                replay,
                mode,
            ]
            out = await asyncio.to_thread(
                subprocess.run, argv, capture_output=True, text=True, timeout=600, check=False
            )
            if out.returncode != 0:
                raise RuntimeError(f"memory child failed: {out.stderr[-2000:]}")
            got = msgspec.json.decode(out.stdout.strip().splitlines()[-1], type=dict[str, float])
            if int(got["events"]) != s.iter_events:
                raise RuntimeError(f"memory child read {got['events']} events")
            key = f"{mode} {s.iter_events} events ({replay})"
            run.memory[key] = got
            print(
                f"  {key:<40} {got['events_per_s']:10.0f} events/s  "
                f"peak RSS growth {got['peak_growth_mb']:.1f} MB",
                flush=True,
            )


async def bench_cache_memory(run: Run) -> None:
    """Bytes per cached event (a cache that holds every aggregate read), and the
    resident set under many aggregates read into a cache that cannot hold them."""
    s = run.sizes
    print("hot cache memory (child processes)", flush=True)
    store = run.hot.store(DOMAIN)
    plans = (
        (PER_EVENT, "ten", s.per_event_aggregates, 10, run.hot.config.nats.cache_bytes),
        (BOUND, "one", s.bound_aggregates, 1, s.bound_bytes),
    )
    for key, tag, count, commits, bound in plans:
        messages = [
            (store.subject(f"{tag}-{i}"), commit(DOMAIN, f"{tag}-{i}".encode(), c, [event(c)]))
            for c in range(commits)
            for i in range(count)
        ]
        await run.raw.bulk_publish(messages)
        argv = [
            sys.executable,
            "-m",
            "benchmarks.cachechild",
            run.url,
            run.stream,
            run.prefix,
            DOMAIN,
            tag,
            str(count),
            str(bound),
        ]
        out = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, timeout=1800, check=False
        )
        if out.returncode != 0:
            raise RuntimeError(f"cache memory child failed: {out.stderr[-2000:]}")
        got = msgspec.json.decode(out.stdout.strip().splitlines()[-1], type=dict[str, float])
        if int(got["events_read"]) != count * commits:
            raise RuntimeError(f"cache memory child read {got['events_read']} events")
        run.cache_memory[key] = got
        print(
            f"  {key:<52} {count} aggregates, {got['entries']:.0f} cached, "
            f"RSS +{got['rss_growth_mb']:.1f} MB (bound {got['max_bytes'] / 2**20:.0f} MiB), "
            f"{got['rss_per_event']:.0f} B/event (estimate {got['estimate_per_event']:.0f})",
            flush=True,
        )
