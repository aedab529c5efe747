"""Streaming and memory: one big aggregate iterated or loaded whole, each in a
child process (`benchmarks.memchild`) so its peak RSS is its own."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import msgspec

from benchmarks.context import DOMAIN, Run
from benchmarks.loads import fill


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
