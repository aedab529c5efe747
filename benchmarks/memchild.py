"""Child process for the memory measurement: stream (or load) one big aggregate.

Run as `python -m benchmarks.memchild URL STREAM PREFIX DOMAIN ROOT REPLAY MODE`;
prints one JSON object. Peak RSS growth is the process's peak resident set
(VmHWM, reset through /proc/self/clear_refs just before reading) minus its
resident set at that moment, so the interpreter, imports and connection are
not counted.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import sys
import time
from typing import Literal

import msgspec

import angzarr_es
from angzarr_es.config import Config
from benchmarks.connection import connection


def _status(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


def reset_peak() -> int:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); returns the current RSS."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")
    return _status("VmRSS")


def peak_rss() -> int:
    """Peak RSS since the last reset (VmHWM), or the process's lifetime peak."""
    try:
        return _status("VmHWM")
    except (OSError, LookupError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def main(argv: list[str]) -> dict[str, float]:
    url, stream, prefix, domain, root, replay, mode = argv
    assert replay in ("direct", "consumer")
    strategy: Literal["direct", "consumer"] = "direct" if replay == "direct" else "consumer"
    nats = msgspec.structs.replace(
        connection(url), stream_name=stream, subject_prefix=prefix, replay=strategy
    )
    config = Config(bus=msgspec.structs.replace(Config().bus, nats=nats))
    async with await angzarr_es.connect(config=config) as client:
        store = client.store(domain)
        # Warm up the code paths (imports, first request) on a tiny range.
        async for _ in store.iter(root, 0, 1):
            pass
        gc.collect()
        before = reset_peak()
        t0 = time.perf_counter()
        count = 0
        if mode == "iter":
            async for event in store.iter(root):
                _ = event.event
                count += 1
        else:
            history = await store.load(root)
            for event in history.events:
                _ = event.event
            count = len(history.events)
        seconds = time.perf_counter() - t0
        peak = peak_rss()
    return {
        "events": count,
        "seconds": seconds,
        "events_per_s": count / seconds,
        "rss_before_mb": before / 2**20,
        "peak_growth_mb": max(0, peak - before) / 2**20,
    }


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1:]))
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
