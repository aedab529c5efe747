"""Child process for the hot-aggregate cache's memory: read many aggregates
through the cache, then report the resident set's growth beside what the
cache says it holds.

Run as `python -m benchmarks.cachechild URL STREAM PREFIX DOMAIN TAG COUNT CACHE_BYTES`
(the aggregates are `TAG-0` .. `TAG-<COUNT-1>`); prints one JSON object. The
growth is the resident set after the reads (and a collection) minus the one
before them, so the interpreter, imports and connection are not counted;
position caching is kept to 1,024 aggregates so that the figure is the hot
cache's.
"""

from __future__ import annotations

import asyncio
import gc
import sys

import msgspec

import angzarr_es
from angzarr_es.config import Config
from benchmarks.connection import connection
from benchmarks.memchild import peak_rss, reset_peak

LOADERS = 16


async def main(argv: list[str]) -> dict[str, float]:
    url, stream, prefix, domain, tag, count_arg, bound_arg = argv
    count, bound = int(count_arg), int(bound_arg)
    nats = msgspec.structs.replace(
        connection(url),
        stream_name=stream,
        subject_prefix=prefix,
        cache_bytes=bound,
        cache_size=1024,
    )
    config = Config(bus=msgspec.structs.replace(Config().bus, nats=nats))
    async with await angzarr_es.connect(config=config) as client:
        store = client.store(domain)
        await store.load(f"{tag}-0")  # the code paths warmed, then forgotten
        client.clear_cache()
        gc.collect()
        before = reset_peak()

        async def loader(first: int) -> int:
            events = 0
            for i in range(first, count, LOADERS):
                events += len((await store.load(f"{tag}-{i}")).events)
            return events

        read = sum(await asyncio.gather(*(loader(k) for k in range(LOADERS))))
        gc.collect()
        after = reset_peak()
        peak = peak_rss()
        cache = (await client.health()).cache
    assert cache is not None
    return {
        "aggregates": count,
        "events_read": read,
        "max_bytes": cache.max_bytes,
        "cache_bytes": cache.bytes,
        "entries": cache.entries,
        "events": cache.events,
        "evictions": cache.evictions,
        "rss_growth_mb": max(0, after - before) / 2**20,
        "peak_growth_mb": max(0, peak - before) / 2**20,
        "rss_per_event": max(0, after - before) / max(1, cache.events),
        "estimate_per_event": cache.bytes / max(1, cache.events),
    }


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1:]))
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
