"""Profile the hot paths with pyinstrument: `python -m benchmarks.profile append|load|writers`.

Starts its own nats-server, runs the operation in a loop under the profiler and
prints the call tree (or writes HTML with `--html PATH`).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from pathlib import Path

import angzarr_es
from angzarr_es.embedded import EmbeddedServer
from angzarr_es.pb import player_pb2
from benchmarks.context import DOMAIN, config


async def workload(url: str, what: str, count: int, size: int) -> tuple[object, float]:
    from pyinstrument import Profiler

    client = await angzarr_es.connect(config=config(url, "direct"))
    await client.provision()
    store = client.store(DOMAIN)
    events = [player_pb2.FundsDeposited(amount_cents=i, currency="EUR") for i in range(size)]
    root = uuid.uuid4()
    if what == "load":
        for first in range(0, count, size):
            await store.append(root, events, expected=first)
    profiler = Profiler(interval=0.0002, async_mode="disabled")
    t0 = time.perf_counter()
    profiler.start()
    if what == "append":
        nxt = 0
        for _ in range(count):
            nxt = (await store.append(root, events, expected=nxt)).next_sequence
    elif what == "load":
        for _ in range(max(1, 20_000 // count)):
            history = await store.load(root)
            for e in history.events:
                e.event  # noqa: B018
    else:

        async def writer() -> None:
            r = uuid.uuid4()
            nxt = 0
            for _ in range(count // 64):
                nxt = (await store.append(r, events, expected=nxt)).next_sequence

        await asyncio.gather(*(writer() for _ in range(64)))
    profiler.stop()
    elapsed = time.perf_counter() - t0
    await client.close()
    return profiler, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    parser.add_argument("what", choices=["append", "load", "writers"])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument(
        "--size",
        type=int,
        default=1,
        help="events per append (and per commit of the loaded aggregate)",
    )
    parser.add_argument("--html", type=Path)
    args = parser.parse_args()
    with EmbeddedServer() as server:
        profiler, elapsed = asyncio.run(workload(server.url, args.what, args.count, args.size))
    print(f"{args.what}: {elapsed:.3f} s under the profiler")
    if args.html:
        args.html.write_text(profiler.output_html())  # type: ignore[attr-defined]
    else:
        print(profiler.output_text(unicode=True, show_all=False))  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
