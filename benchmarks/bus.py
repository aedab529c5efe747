"""Bus benchmarks: end-to-end latency and projector throughput.

    python -m benchmarks.bus [--url nats://...] [--quick]

Measured side by side in one run against one nats-server (an embedded one on
free ports with temporary storage unless --url is given):

- latency from `append` returning (and from `append` being called) to the
  handler being called, p50/p99, for a durable projector, a JetStream live
  subscription and core NATS (`bus.publish` -> core subscription);
- projector throughput in commits per second over a backlog, with
  concurrency 1 and 16, for a no-op handler and one that awaits 1 ms of I/O.

Writes docs/benchmarks/bus.json (with --quick, a file in the temporary
directory) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

import angzarr_es
from angzarr_es import Delivery, filters
from angzarr_es.config import Config
from angzarr_es.embedded import EmbeddedServer
from angzarr_es.pb import core_pb2, player_pb2
from angzarr_es.store import EventStore
from angzarr_es.subjects import root_bytes
from benchmarks.connection import connection

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "bus.json"
QUICK_OUT = Path(tempfile.gettempdir()) / "angzarr-es-bench" / "bus.json"


def _config(url: str, tag: str, *, jetstream: bool = True) -> Config:
    nats = msgspec.structs.replace(
        connection(url),
        jetstream=jetstream,
        stream_name=f"bench-{tag}",
        subject_prefix=f"bench{tag}",
        dlq_stream=f"bench-{tag}-dlq",
    )
    return Config(bus=msgspec.structs.replace(Config().bus, nats=nats))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(name: str, returned: list[float], called: list[float]) -> dict[str, Any]:
    ms = 1000.0
    return {
        "name": name,
        "n": len(returned),
        "from_return_p50_ms": _pct(returned, 0.50) * ms,
        "from_return_p99_ms": _pct(returned, 0.99) * ms,
        "from_call_p50_ms": _pct(called, 0.50) * ms,
        "from_call_p99_ms": _pct(called, 0.99) * ms,
        "mean_ms": statistics.fmean(returned) * ms,
    }


async def _latency(
    send: Callable[[int], Awaitable[None]],
    arrived: dict[int, float],
    changed: asyncio.Event,
    n: int,
) -> tuple[list[float], list[float]]:
    returned: list[float] = []
    called: list[float] = []
    for i in range(n):
        changed.clear()
        t0 = time.perf_counter()
        await send(i)
        t1 = time.perf_counter()
        while i not in arrived:
            await asyncio.wait_for(changed.wait(), 10)
            changed.clear()
        returned.append(arrived[i] - t1)
        called.append(arrived[i] - t0)
    return returned, called


def _recorder() -> tuple[Callable[[Delivery], Awaitable[None]], dict[int, float], asyncio.Event]:
    arrived: dict[int, float] = {}
    changed = asyncio.Event()

    async def handler(d: Delivery) -> None:
        arrived[d.events[0].event.amount_cents] = time.perf_counter()  # type: ignore[attr-defined]
        changed.set()

    return handler, arrived, changed


def _appender(store: EventStore, ahead: int = 0) -> Callable[[int], Awaitable[None]]:
    """Send event `i` as the aggregate's event `i + ahead`."""

    async def send(i: int) -> None:
        await store.append("p", [player_pb2.FundsDeposited(amount_cents=i)], expected=i + ahead)

    return send


@contextlib.asynccontextmanager
async def _provisioned(url: str, tag: str) -> AsyncIterator[angzarr_es.Client]:
    """A client on streams of its own (named for `tag`), deleted when done."""
    cfg = _config(url, tag)
    async with await angzarr_es.connect(config=cfg) as client:
        await client.provision()
        try:
            yield client
        finally:
            await _drop(client, cfg)


async def latency_projector(url: str, n: int) -> dict[str, Any]:
    async with _provisioned(url, "lp") as client:
        store = client.store("player")
        handler, arrived, changed = _recorder()
        async with client.projector("bench", filters.domain("player"), handler) as p:
            # Warm up the path once, outside the measurement.
            await _appender(store)(0)
            await p.wait(lambda s: s.handled == 1, timeout=10)
            arrived.clear()
            returned, called = await _latency(_appender(store, 1), arrived, changed, n)
    return _summary("durable projector (JetStream)", returned, called)


async def latency_subscription(url: str, n: int) -> dict[str, Any]:
    async with _provisioned(url, "ls") as client:
        store = client.store("player")
        handler, arrived, changed = _recorder()
        async with await client.bus.subscribe(filters.domain("player"), handler):
            returned, called = await _latency(_appender(store), arrived, changed, n)
    return _summary("live subscription (JetStream)", returned, called)


async def latency_core(url: str, n: int) -> dict[str, Any]:
    cfg = _config(url, "lc", jetstream=False)
    async with await angzarr_es.connect(config=cfg) as client:
        handler, arrived, changed = _recorder()
        async with await client.bus.subscribe(filters.domain("player"), handler):

            async def send(i: int) -> None:
                book = core_pb2.EventBook()
                book.cover.domain = "player"
                book.cover.root.value = root_bytes("p")
                page = book.pages.add()
                page.header.sequence = i
                page.event.Pack(player_pb2.FundsDeposited(amount_cents=i), type_url_prefix="")
                await client.bus.publish(book)

            returned, called = await _latency(send, arrived, changed, n)
    return _summary("core NATS publish -> subscription", returned, called)


async def throughput(url: str, commits: int, roots: int, io_ms: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with _provisioned(url, f"t{int(io_ms * 1000)}") as client:
        store = client.store("player")
        per_root = commits // roots
        for i in range(per_root):
            await asyncio.gather(
                *(
                    store.append(f"r{r}", [player_pb2.FundsDeposited(amount_cents=i)], expected=i)
                    for r in range(roots)
                )
            )
        total = per_root * roots

        async def work(d: Delivery) -> None:
            if io_ms:
                await asyncio.sleep(io_ms / 1000)  # the handler's simulated I/O

        for concurrency in (1, 16):
            name = f"tp{concurrency}"
            p = client.projector(name, filters.domain("player"), work, concurrency=concurrency)
            t0 = time.perf_counter()
            async with p:
                await p.wait(lambda s: s.handled >= total, timeout=600)
            elapsed = time.perf_counter() - t0
            await p.delete()
            rows.append(
                {
                    "name": f"projector, handler {'no-op' if not io_ms else f'{io_ms:g} ms I/O'}",
                    "concurrency": concurrency,
                    "commits": total,
                    "aggregates": roots,
                    "seconds": elapsed,
                    "commits_per_s": total / elapsed,
                }
            )
    base = rows[0]["commits_per_s"]
    for row in rows:
        row["ratio_vs_concurrency_1"] = row["commits_per_s"] / base
    return rows


async def _drop(client: angzarr_es.Client, cfg: Config) -> None:
    for name in (cfg.nats.stream_name, cfg.nats.dlq_stream):
        await client._wire.js.stream_delete(name)


def _environment(server_version: str) -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "nats_server": server_version,
        "nats_py": importlib.metadata.version("nats-py"),
        "msgspec": importlib.metadata.version("msgspec"),
        "angzarr_es": angzarr_es.__version__,
    }


async def run(url: str, quick: bool) -> dict[str, Any]:
    n = 200 if quick else 1000
    commits = 1000 if quick else 4000
    async with await angzarr_es.connect(config=_config(url, "v")) as client:
        version = client.server_version
    latency = [
        await latency_projector(url, n),
        await latency_subscription(url, n),
        await latency_core(url, n),
    ]
    tp = await throughput(url, commits, 100, 0.0)
    tp += await throughput(url, commits // 4, 100, 1.0)
    return {"environment": _environment(version), "latency": latency, "throughput": tp}


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        f"Bus benchmarks, {env['date']}: Python {env['python']}, nats-server {env['nats_server']}, "
        f"nats-py {env['nats_py']}, angzarr_es {env['angzarr_es']}, {env['cpus']} CPUs "
        f"({env['platform']}).",
        "",
        "| latency to handler | n | p50 from append return (ms) | p99 (ms) | p50 from append call (ms) | p99 (ms) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["latency"]:
        lines.append(
            f"| {r['name']} | {r['n']} | {r['from_return_p50_ms']:.3f} | {r['from_return_p99_ms']:.3f} "
            f"| {r['from_call_p50_ms']:.3f} | {r['from_call_p99_ms']:.3f} |"
        )
    lines += [
        "",
        "| projector throughput | concurrency | commits | commits/s | vs concurrency 1 |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results["throughput"]:
        lines.append(
            f"| {r['name']} | {r['concurrency']} | {r['commits']} | {r['commits_per_s']:.0f} "
            f"| {r['ratio_vs_concurrency_1']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bus", description=__doc__)
    parser.add_argument("--url", help="use this JetStream server instead of an embedded one")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument(
        "--out", type=Path, help=f"default: {OUT}, or with --quick {QUICK_OUT} (not published)"
    )
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = QUICK_OUT if args.quick else OUT
    if args.url:
        results = asyncio.run(run(args.url, args.quick))
    else:
        with EmbeddedServer() as server:
            results = asyncio.run(run(server.url, args.quick))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
