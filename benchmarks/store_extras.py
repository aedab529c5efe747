"""Snapshots, correlation and discovery, measured side by side on an embedded server.

    python -m benchmarks.store_extras [--events 100000] [--per-commit 10]
        [--appends 2000] [--aggregates 200000]

Prints the machine, Python, nats-server, nats-py and angzarr_es versions, then:
- load time of one aggregate of `--events` events, without and with a snapshot
  (p50/p99 over repeated loads, and the ratio);
- append latency without and with a correlation id (interleaved, p50/p99);
- list_roots over `--aggregates` aggregates, and one page of the subject index
  via STREAM.INFO versus Direct Get multi_last.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from importlib import metadata

import msgspec

import angzarr_es
from angzarr_es._nats import api
from angzarr_es._nats import messages as js
from angzarr_es.config import Config, NatsConfig
from angzarr_es.embedded import EmbeddedServer
from angzarr_es.pb import player_pb2
from angzarr_es.subjects import encode_root
from benchmarks.commits import commit

WINDOW = 8192


def deposit(cents: int) -> player_pb2.FundsDeposited:
    return player_pb2.FundsDeposited(amount_cents=cents, currency="EUR")


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(name: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"{name:<44} p50 {pct(ms, 0.5):9.3f} ms   p99 {pct(ms, 0.99):9.3f} ms   n={len(ms)}"


async def timed(fn: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


async def publish_acked(client: angzarr_es.Client, items: list[tuple[str, bytes]]) -> None:
    """Pipelined publishes, WINDOW in flight, every ack awaited."""
    nc = client._wire.nc
    inbox = nc.new_inbox()
    acked = 0
    target = 0
    done = asyncio.Event()

    async def on_ack(msg: object) -> None:
        nonlocal acked
        acked += 1
        if b'"error"' in msg.data:  # type: ignore[attr-defined]
            raise SystemExit(f"publish refused: {msg.data!r}")  # type: ignore[attr-defined]
        if acked >= target:
            done.set()

    sub = await nc.subscribe(inbox, cb=on_ack)
    for start in range(0, len(items), WINDOW):
        chunk = items[start : start + WINDOW]
        target = start + len(chunk)
        done.clear()
        for subject, payload in chunk:
            await nc.publish(subject, payload, reply=inbox)
        await asyncio.wait_for(done.wait(), 60)
    await sub.unsubscribe()


async def bench_snapshots(client: angzarr_es.Client, events: int, per_commit: int) -> None:
    store = client.store("player")
    subject = store.subject("big")
    items = []
    for first in range(0, events, per_commit):
        batch = [deposit(i) for i in range(first, min(events, first + per_commit))]
        items.append((subject, commit("player", b"big", first, batch)))
    await publish_acked(client, items)
    print(f"\n== load of one aggregate: {events} events in {len(items)} commits ==")
    hist = await store.load("big")
    assert len(hist.events) == events
    repeat = 5
    full = await timed(lambda: store.load("big"), repeat)
    print(line("load, no snapshot", full))
    await store.save_snapshot("big", player_pb2.PlayerState(balance_cents=1), events - 1)
    hist = await store.load("big", snapshot=True)
    assert hist.events == []
    assert hist.next_sequence == events
    snap = await timed(lambda: store.load("big", snapshot=True), 50)
    print(line("load, snapshot at the last event", snap))
    print(f"{'ratio (p50 no snapshot / p50 snapshot)':<44} {pct(full, 0.5) / pct(snap, 0.5):9.1f}x")
    mid = events - 100
    await store.save_snapshot("big", player_pb2.PlayerState(balance_cents=2), mid)
    tail = await timed(lambda: store.load("big", snapshot=True), 50)
    print(line("load, snapshot 100 events before the end", tail))
    save = await timed(
        lambda: store.save_snapshot("big", player_pb2.PlayerState(balance_cents=3), events - 1),
        50,
    )
    print(line("save_snapshot of the last event", save))
    old = await timed(
        lambda: store.save_snapshot("big", player_pb2.PlayerState(balance_cents=4), 5), 5
    )
    print(line("save_snapshot of event 5 (binary search)", old))


async def bench_correlation(client: angzarr_es.Client, appends: int) -> None:
    store = client.store("player")
    plain: list[float] = []
    correlated: list[float] = []
    batched: list[float] = []
    wire = client._wire
    stream = client.config.nats.stream_name
    events_prefix = f"{client.config.nats.subject_prefix}.events.batch."
    entry = f"{client.config.nats.subject_prefix}.correlation.batch"
    payload = commit("batch", b"x", 0, [deposit(1)], correlation_id="wf")
    for n in range(appends):
        t = time.perf_counter()
        await store.append("plain", [deposit(n)], expected=n)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        await store.append("corr", [deposit(n)], expected=n, correlation_id=f"wf-{n % 100}")
        correlated.append(time.perf_counter() - t)
        # The alternative not taken: commit + entry as one atomic batch (2.12+).
        t = time.perf_counter()
        batch = {"Nats-Batch-Id": f"b{n}", "Nats-Batch-Sequence": "1"}
        await wire.publish(f"{events_prefix}{n}", payload, headers=batch)
        last = {"Nats-Batch-Id": f"b{n}", "Nats-Batch-Sequence": "2", "Nats-Batch-Commit": "1"}
        ack = await wire.publish_commit(stream, entry, b"x", last, 10.0)
        assert ack.error is None, ack.error
        batched.append(time.perf_counter() - t)
    print(f"\n== append, interleaved, {appends} each ==")
    print(line("append, no correlation id", plain))
    print(line("append, correlation id (entry, then commit)", correlated))
    print(
        f"{'ratio (p50 correlated / p50 plain)':<44} {pct(correlated, 0.5) / pct(plain, 0.5):9.2f}x"
    )
    print(line("atomic batch commit + entry (not used)", batched))
    q = await timed(lambda: client.events_by_correlation("wf-7"), 20)
    print(line(f"events_by_correlation ({appends // 100} commits)", q))


async def bench_discovery(client: angzarr_es.Client, aggregates: int) -> None:
    prefix = f"{client.config.nats.subject_prefix}.events."
    payload = commit("d", b"x", 0, [deposit(1)])
    items = [(f"{prefix}many.{encode_root(f'id-{i:07d}')}", payload) for i in range(aggregates)]
    items += [(f"{prefix}k1.{encode_root(f'id-{i:07d}')}", payload) for i in range(1000)]
    items += [(f"{prefix}k1025.{encode_root(f'id-{i:07d}')}", payload) for i in range(1025)]
    await publish_acked(client, items)
    del items
    print(f"\n== discovery: {aggregates} aggregates in one domain ==")

    async def count(domain: str) -> int:
        return len([r async for r in client.store(domain).list_roots()])

    assert await count("many") == aggregates
    print(line(f"list_roots, {aggregates} aggregates", await timed(lambda: count("many"), 3)))
    print(line("list_roots, 1000 aggregates", await timed(lambda: count("k1"), 20)))
    print(line("list_domains (all subjects)", await timed(lambda: _drain(client), 3)))
    stream = client.config.nats.stream_name
    wire = client._wire

    async def multi_last(domain: str) -> tuple[int, str]:
        body = js.encode({"multi_last": [f"{prefix}{domain}.*"], "batch": 2000})
        subject = api.DIRECT_GET.format(stream=stream)
        got = await wire.mux.gather(subject, body, 2001, "multi_last")
        return len(got.replies), got.status

    print(line("Direct Get multi_last, 1000 aggregates", await timed(lambda: multi_last("k1"), 20)))
    print(f"{'multi_last answers for 1000 aggregates':<44} {await multi_last('k1')}")
    print(f"{'multi_last answers for 1025 aggregates':<44} {await multi_last('k1025')}")

    async def info_page(offset: int) -> int:
        body = msgspec.json.encode({"subjects_filter": f"{prefix}many.*", "offset": offset})
        return len(await wire.js.call(api.STREAM_INFO.format(stream=stream), body))

    size = await info_page(0)
    print(line("STREAM.INFO page at offset 0", await timed(lambda: info_page(0), 5)))
    print(f"{'STREAM.INFO page reply size':<44} {size / 1e6:9.2f} MB")


async def _drain(client: angzarr_es.Client) -> list[str]:
    return [d async for d in client.list_domains()]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--per-commit", type=int, default=10)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--aggregates", type=int, default=200_000)
    args = parser.parse_args()
    with EmbeddedServer() as server:
        nats = NatsConfig(url=server.url, stream_name="bench-events")
        config = Config(bus=msgspec.structs.replace(Config().bus, nats=nats))
        async with await angzarr_es.connect(config=config) as client:
            await client.provision()
            print(
                f"machine: {platform.machine()} {platform.system()} {os.cpu_count()} cpus; "
                f"python {sys.version.split()[0]}; nats-server {client.server_version}; "
                f"nats-py {metadata.version('nats-py')}; angzarr_es {angzarr_es.__version__}"
            )
            await bench_snapshots(client, args.events, args.per_commit)
            await bench_correlation(client, args.appends)
            await bench_discovery(client, args.aggregates)


if __name__ == "__main__":
    asyncio.run(main())
