"""Timing: interleaved rounds, percentiles, and the machine a run happened on."""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from angzarr_es.embedded import find_nats_server

Op = Callable[[int], Awaitable[object]]


@dataclass(slots=True)
class Case:
    """One contender for one operation.

    `run(i)` is timed; `prepare(i)` (untimed) runs before it when given.
    """

    contender: str
    run: Op
    prepare: Op | None = None


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    """Summary of one contender on one operation (times in microseconds)."""

    op: str
    contender: str
    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    ops_per_s: float
    events_per_s: float = 0.0
    round_p50s: list[float] = []
    extra: dict[str, float] = {}


@dataclass(slots=True)
class Measured:
    stats: Stats
    samples_us: list[float] = field(default_factory=list)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(q / 100 * len(sorted_values) + 0.5 - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(
    op: str,
    contender: str,
    samples_ns: list[int],
    busy_ns: int,
    events_per_op: int,
    round_p50s: list[float],
) -> Measured:
    us = sorted(s / 1000 for s in samples_ns)
    n = len(us)
    ops_per_s = n / (busy_ns / 1e9) if busy_ns else 0.0
    stats = Stats(
        op=op,
        contender=contender,
        n=n,
        p50=percentile(us, 50),
        p90=percentile(us, 90),
        p99=percentile(us, 99),
        mean=sum(us) / n if n else 0.0,
        ops_per_s=ops_per_s,
        events_per_s=ops_per_s * events_per_op,
        round_p50s=round_p50s,
    )
    return Measured(stats, us)


async def _untimed(case: Case, i: int) -> None:
    """One call of `case` off the clock (its result freed on return)."""
    if case.prepare is not None:
        await case.prepare(i)
    await case.run(i)


async def measure(
    op: str,
    cases: Sequence[Case],
    *,
    samples: int,
    rounds: int,
    warmup: int,
    events_per_op: int = 1,
) -> list[Measured]:
    """Time every case `samples` times, interleaved in `rounds` so that noise
    from other processes on a shared machine hits every contender alike."""
    per_round = max(1, samples // rounds)
    timings: dict[str, list[int]] = {c.contender: [] for c in cases}
    busy: dict[str, int] = dict.fromkeys(timings, 0)
    round_p50s: dict[str, list[float]] = {c.contender: [] for c in cases}
    counter = 0
    for case in cases:
        for _ in range(warmup):
            counter += 1
            await _untimed(case, counter)
    for _ in range(rounds):
        for case in cases:
            gc.collect()
            # One untimed call after the collection: walking the whole heap
            # leaves the CPU caches cold, and the first call after it was 3-5x
            # a warm one for every contender; timed, it made up the p99 of
            # 100-sample rounds (see docs/benchmarks, "Fifth round").
            counter += 1
            await _untimed(case, counter)
            got: list[int] = []
            for _ in range(per_round):
                counter += 1
                if case.prepare is not None:
                    await case.prepare(counter)
                t0 = time.perf_counter_ns()
                result = await case.run(counter)
                got.append(time.perf_counter_ns() - t0)
                # Released after the clock stops: a load's latency ends when the
                # caller holds its result, and freeing that result is the
                # caller's cost whenever it drops it (see docs/benchmarks).
                del result
            timings[case.contender].extend(got)
            busy[case.contender] += sum(got)
            ordered = sorted(got)
            round_p50s[case.contender].append(round(percentile(ordered, 50) / 1000, 1))
    return [
        summarize(
            op,
            c.contender,
            timings[c.contender],
            busy[c.contender],
            events_per_op,
            round_p50s[c.contender],
        )
        for c in cases
    ]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _nats_server_version() -> str:
    try:
        out = subprocess.run(
            [find_nats_server(), "--version"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    return out.stdout.strip().removeprefix("nats-server: ")


def filesystem(path: str) -> str:
    """Type and device of the filesystem holding `path` (where fsync lands)."""
    try:
        out = (
            subprocess.run(
                ["df", "-T", path], capture_output=True, text=True, timeout=10, check=True
            )
            .stdout.splitlines()[-1]
            .split()
        )
    except (OSError, subprocess.SubprocessError, IndexError) as exc:
        return f"unknown ({exc})"
    return f"{out[1]} on {out[0]}"


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    load = os.getloadavg()
    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "os": platform.platform(),
        "python": sys.version.split()[0] + " " + platform.python_implementation(),
        "nats-server": _nats_server_version(),
        "nats-py": _version("nats-py"),
        "msgspec": _version("msgspec"),
        "protobuf": _version("protobuf"),
        "eventsourcing": _version("eventsourcing"),
        "sqlite": sqlite3.sqlite_version,
        "loadavg_start": " ".join(f"{x:.2f}" for x in load),
    }
