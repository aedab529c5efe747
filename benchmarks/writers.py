"""Concurrent writers: many tasks, each appending to an aggregate of its own,
timed in rounds; the rate is appends per second of wall time."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import msgspec

from benchmarks.commits import commit, event
from benchmarks.contenders import FLOOR, NAIVE, OURS
from benchmarks.context import DOMAIN, Run
from benchmarks.harness import Measured, summarize


async def bench_writers(run: Run) -> None:
    s = run.sizes
    print("concurrent writers", flush=True)
    store = run.store
    payload = commit(DOMAIN, b"floor", 0, [event()])

    async def ours_writer(latencies: list[int]) -> None:
        root = uuid.uuid4()
        nxt = 0
        for _ in range(s.writer_appends):
            t0 = time.perf_counter_ns()
            nxt = (await store.append(root, [event()], expected=nxt)).next_sequence
            latencies.append(time.perf_counter_ns() - t0)

    async def floor_writer(latencies: list[int]) -> None:
        subject = store.subject(uuid.uuid4())
        last = 0
        for _ in range(s.writer_appends):
            t0 = time.perf_counter_ns()
            last = (await run.raw.request_append(subject, payload, last)).seq
            latencies.append(time.perf_counter_ns() - t0)

    async def naive_writer(latencies: list[int]) -> None:
        subject = store.subject(uuid.uuid4())
        last = 0
        for seq in range(s.writer_appends):
            t0 = time.perf_counter_ns()
            body = commit(DOMAIN, b"naive", seq, [event()])
            last = await run.raw.naive_append(subject, body, last)
            latencies.append(time.perf_counter_ns() - t0)

    writers: dict[str, Callable[[list[int]], Awaitable[None]]] = {
        OURS: ours_writer,
        FLOOR: floor_writer,
        NAIVE: naive_writer,
    }
    op = f"{s.writers} concurrent writers"
    samples: dict[str, list[int]] = {name: [] for name in writers}
    wall: dict[str, int] = dict.fromkeys(writers, 0)
    round_rates: dict[str, list[float]] = {name: [] for name in writers}
    for round_ in range(s.writer_rounds + 1):
        for name, writer in writers.items():
            latencies: list[int] = []
            t0 = time.perf_counter_ns()
            await asyncio.gather(*(writer(latencies) for _ in range(s.writers)))
            elapsed = time.perf_counter_ns() - t0
            if round_ == 0:  # the first round warms up
                continue
            samples[name].extend(latencies)
            wall[name] += elapsed
            round_rates[name].append(round(len(latencies) / (elapsed / 1e9)))
    measured = []
    for name in writers:
        m = summarize(op, name, samples[name], 0, 1, [])
        rate = len(samples[name]) / (wall[name] / 1e9)
        stats = msgspec.structs.replace(
            m.stats,
            ops_per_s=rate,
            events_per_s=rate,
            extra={"rounds": len(round_rates[name])},
            round_p50s=[float(r) for r in round_rates[name]],
        )
        measured.append(Measured(stats, m.samples_us))
    run.keep(measured)
