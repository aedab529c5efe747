"""One `eventsourcing` application on the library's SQLite and PostgreSQL
modules and on `angzarr_es.eventsourcing`, measured side by side:

    python -m benchmarks.es_app [--quick | --tiny] [--pg-dsn DSN] [--url NATS_URL] [--out DIR]

Saving one event and ten (new aggregates), getting a 100-event aggregate
with and without the library's aggregate cache, reading 1,000 notifications,
and concurrent saves from many threads. Each operation is timed for every
contender in interleaved rounds (`harness.measure`) and reported as p50, p90,
p99 and ratios to PostgreSQL and SQLite, with the issue's targets. Without
`--pg-dsn` (or ANGZARR_BENCH_PG_DSN), PostgreSQL is left out and said so.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from angzarr_es.config import redact_url
from angzarr_es.embedded import EmbeddedServer
from benchmarks import peers
from benchmarks.contenders import ES_MODULE, POSTGRES, SQLITE
from benchmarks.harness import (
    Case,
    Measured,
    Op,
    Stats,
    filesystem,
    machine,
    measure,
    summarize,
)
from benchmarks.report import fmt_rate, fmt_us
from benchmarks.run import command_line
from benchmarks.targets import Target

SAVE_1 = "save 1 event (new aggregate)"
SAVE_10 = "save 10 events (new aggregate)"
GET_100 = "get a 100-event aggregate"
GET_100_CACHED = "get a 100-event aggregate (aggregate cache, fast-forward)"
READ_1000 = "read 1,000 notifications"
CONCURRENT = "concurrent saves (1 event each)"


@dataclass(frozen=True, slots=True)
class Preset:
    samples: int
    rounds: int
    warmup: int
    threads: int
    saves_per_thread: int
    throughput_rounds: int
    aggregates: int = 12
    """100-event aggregates each contender holds (12: 1,200 notifications to read)."""


PRESETS = {
    "full": Preset(1000, 10, 50, 16, 200, 5),
    "quick": Preset(200, 5, 10, 16, 60, 3),
    "tiny": Preset(10, 1, 1, 4, 5, 1, aggregates=2),
}


class Account(Aggregate):
    @event("Opened")
    def __init__(self, name: str) -> None:
        self.name = name
        self.balance = 0

    @event("Credited")
    def credit(self, amount: int) -> None:
        self.balance += amount


class Bank(Application[uuid.UUID]):
    pass


def account(events: int) -> Account:
    """A new account with `events` pending events (opened, then credited)."""
    acct = Account("bench")
    for _ in range(events - 1):
        acct.credit(1)
    return acct


class Contender:
    """One persistence module: an application without cache and one with."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.app = Bank(env=env)
        self.cached = Bank(env={**env, "AGGREGATE_CACHE_MAXSIZE": "1000"})
        self.ids: list[uuid.UUID] = []
        self.pending: dict[int, Account] = {}

    def fill(self, aggregates: int) -> None:
        """The aggregates the reads read: 100 events each, saved 10 at a time."""
        for _ in range(aggregates):
            acct = account(10)
            self.app.save(acct)
            for _ in range(9):
                for _ in range(10):
                    acct.credit(1)
                self.app.save(acct)
            self.ids.append(acct.id)
            self.cached.repository.get(acct.id)  # in the cache from now on

    def cases(self) -> dict[str, Case]:
        def prepared(events: int) -> Op:
            async def prepare(i: int) -> None:
                self.pending[i] = account(events)

            return prepare

        async def save(i: int) -> object:
            return self.app.save(self.pending.pop(i))

        async def get(i: int) -> object:
            return self.app.repository.get(self.ids[i % len(self.ids)])

        async def get_cached(i: int) -> object:
            return self.cached.repository.get(self.ids[i % len(self.ids)])

        async def read(i: int) -> object:
            return self.app.recorder.select_notifications(start=1 + i % 100, limit=1000)

        return {
            SAVE_1: Case(self.name, save, prepared(1)),
            SAVE_10: Case(self.name, save, prepared(10)),
            GET_100: Case(self.name, get),
            GET_100_CACHED: Case(self.name, get_cached),
            READ_1000: Case(self.name, read),
        }

    def throughput(self, threads: int, saves: int) -> tuple[list[int], int]:
        """`threads` threads saving `saves` new one-event aggregates each: every
        save's latency (ns) and the wall time (ns)."""
        latencies: list[list[int]] = [[] for _ in range(threads)]
        start = threading.Barrier(threads + 1)

        def work(mine: list[int]) -> None:
            accounts = [account(1) for _ in range(saves)]
            start.wait()
            for acct in accounts:
                t0 = time.perf_counter_ns()
                self.app.save(acct)
                mine.append(time.perf_counter_ns() - t0)

        pool = [threading.Thread(target=work, args=(mine,)) for mine in latencies]
        for t in pool:
            t.start()
        start.wait()
        t0 = time.perf_counter_ns()
        for t in pool:
            t.join()
        return [x for mine in latencies for x in mine], time.perf_counter_ns() - t0

    def close(self) -> None:
        self.cached.close()
        self.app.close()


def concurrent(contenders: Sequence[Contender], preset: Preset) -> list[Measured]:
    """Throughput rounds, interleaved across contenders."""
    samples: dict[str, list[int]] = {c.name: [] for c in contenders}
    wall: dict[str, int] = dict.fromkeys(samples, 0)
    rates: dict[str, list[float]] = {c.name: [] for c in contenders}
    for _ in range(preset.throughput_rounds):
        for c in contenders:
            got, took = c.throughput(preset.threads, preset.saves_per_thread)
            samples[c.name] += got
            wall[c.name] += took
            rates[c.name].append(round(len(got) / (took / 1e9)))
    op = f"{CONCURRENT}, {preset.threads} threads"
    return [summarize(op, n, samples[n], wall[n], 1, rates[n]) for n in samples]


def targets(stats: Sequence[Stats]) -> list[Target]:
    """The issue's targets: each against PostgreSQL (left out without it)."""
    by = {(s.op, s.contender): s for s in stats}
    out: list[Target] = []
    for op, field, limit, at_least in (
        (SAVE_1, "p50", 1.0, False),
        (GET_100, "p50", 1.0, False),
        (next((s.op for s in stats if s.op.startswith(CONCURRENT)), ""), "ops_per_s", 2.0, True),
    ):
        ours, pg = by.get((op, ES_MODULE)), by.get((op, POSTGRES))
        if ours is None or pg is None:
            continue
        a, b = getattr(ours, field), getattr(pg, field)
        value = a / b if b else float("inf")
        out.append(
            Target(
                name=f"{op}: {field} / PostgreSQL's {'>=' if at_least else '<='} {limit:g}",
                measured=round(value, 3),
                limit=limit,
                unit="x",
                met=value >= limit if at_least else value <= limit,
                detail=f"{a:.1f} / {b:.1f}",
            )
        )
    return out


def markdown(meta: dict[str, str], notes: list[str], stats: Sequence[Stats]) -> str:
    lines = [
        f"# eventsourcing application: SQLite, PostgreSQL, angzarr_es.eventsourcing "
        f"({meta['preset']} run)",
        "",
        f"Measured {meta['started']} on {meta['cpu']}, {meta['cores']} cores (load average "
        f"{meta['loadavg_start']} at start, {meta['loadavg_end']} at end), {meta['os']}. "
        f"Python {meta['python']}, eventsourcing {meta['eventsourcing']}, nats-server "
        f"{meta['nats-server']}, nats-py {meta['nats-py']}, SQLite {meta['sqlite']}. "
        f"Storage: {meta['storage']}. Run took {meta['seconds']} s.",
        "",
        f"Command: `{meta['command']}`",
        "",
        *(f"- {note}" for note in notes),
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---:|:---:|",
    ]
    for t in targets(stats):
        lines.append(
            f"| {t.name} | {t.measured:g}x ({t.detail}) | {'yes' if t.met else '**no**'} |"
        )
    ops: dict[str, list[Stats]] = {}
    for s in stats:
        ops.setdefault(s.op, []).append(s)
    for op, rows in ops.items():
        pg = next((r for r in rows if r.contender == POSTGRES), None)
        lite = next((r for r in rows if r.contender == SQLITE), None)
        throughput = op.startswith(CONCURRENT)
        lines += [
            "",
            f"### {op}",
            "",
            "| contender | p50 | p90 | p99 | "
            + (
                "saves/s | / PostgreSQL | / SQLite | per round |"
                if throughput
                else "p50 / PostgreSQL | p50 / SQLite |"
            ),
            "|---|---:|---:|---:|---:|---:|" + ("---:|---|" if throughput else ""),
        ]
        for r in rows:
            if throughput:
                vs = [f"{r.ops_per_s / o.ops_per_s:.2f}" if o else "" for o in (pg, lite)]
                tail = f"{fmt_rate(r.ops_per_s)} | {vs[0]} | {vs[1]} | " + ", ".join(
                    fmt_rate(x) for x in r.round_p50s
                )
            else:
                vs = [f"{r.p50 / o.p50:.2f}" if o else "" for o in (pg, lite)]
                tail = f"{vs[0]} | {vs[1]}"
            lines.append(
                f"| {r.contender} | {fmt_us(r.p50)} | {fmt_us(r.p90)} | {fmt_us(r.p99)} | {tail} |"
            )
    return "\n".join(lines) + "\n"


def postgres_env(dsn: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(params.get("dbname", "postgres")),
        "POSTGRES_HOST": str(params.get("host", "127.0.0.1")),
        "POSTGRES_PORT": str(params.get("port", "5432")),
        "POSTGRES_USER": str(params.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(params.get("password", "")),
        "POSTGRES_POOL_SIZE": "20",
    }


def run(
    args: argparse.Namespace, nats_url: str, tmp: Path, meta: dict[str, str], t0: float
) -> list[Stats]:
    preset = PRESETS[meta["preset"]]
    notes: list[str] = []
    stream = f"bench-es-{uuid.uuid4().hex[:8]}"
    envs = {
        SQLITE: {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp / "es.db")},
        ES_MODULE: {
            "PERSISTENCE_MODULE": "angzarr_es.eventsourcing",
            "NATS_URL": nats_url,
            "ANGZARR_ES_STREAM": stream,
        },
    }
    dsn, why = peers.find_postgres(args.pg_dsn)
    if dsn is None:
        notes.append(f"PostgreSQL left out: {why}")
    else:
        envs[POSTGRES] = postgres_env(dsn)
        notes.append(f"PostgreSQL at {redact_url(dsn)}: {why}; pool of 20 connections")
    notes += [
        f"NATS: {meta['nats_mode']}; the stream {stream} is deleted after the run.",
        "Durability is not alike: PostgreSQL (synchronous_commit=on) and SQLite "
        "(synchronous=FULL) fsync every commit; nats-server's file store syncs every two "
        "minutes by default, and an acknowledged insert is made durable by replication "
        "(R3) instead. `--sync-always` starts a server that fsyncs every message.",
        "A save of several events is one atomic batch on NATS (JetStream atomic batch "
        "publish): the server stages each batch on file storage with fsyncs, about 4 ms "
        "whatever its size up to ten, against about 0.2 ms for a single publish.",
    ]
    contenders = [Contender(name, env) for name, env in envs.items()]
    lite = contenders[0].app.recorder
    notes.insert(0, peers.Recorder(SQLITE, lite, getattr(lite, "datastore", None)).settings())
    try:
        if POSTGRES in envs:  # fresh tables: drop what an earlier run left
            _truncate(contenders[-1])
        for c in contenders:
            c.fill(preset.aggregates)
        measured: list[Measured] = []
        ops = [c.cases() for c in contenders]
        for op in (SAVE_1, SAVE_10, GET_100, GET_100_CACHED, READ_1000):
            events = {SAVE_1: 1, SAVE_10: 10, GET_100: 100, GET_100_CACHED: 100}.get(op, 1000)
            measured += asyncio.run(
                measure(
                    op,
                    [case[op] for case in ops],
                    samples=preset.samples,
                    rounds=preset.rounds,
                    warmup=preset.warmup,
                    events_per_op=events,
                )
            )
        measured += concurrent(contenders, preset)
    finally:
        for c in contenders:
            if c.name == ES_MODULE:
                ds = c.app.factory.datastore  # type: ignore[attr-defined]
                ds.run(ds.wire.js.stream_delete(stream), "delete the run's stream")
            c.close()
    stats = [m.stats for m in measured]
    meta["seconds"] = f"{time.perf_counter() - t0:.1f}"
    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-sync-always" if "always" in meta["nats_mode"] else ""
    base = args.out / f"eventsourcing-{meta['preset']}{suffix}"
    data = {"machine": meta, "notes": notes, "results": stats, "targets": targets(stats)}
    base.with_suffix(".json").write_bytes(msgspec.json.format(msgspec.json.encode(data)) + b"\n")
    base.with_suffix(".md").write_text(markdown(meta, notes, stats), encoding="utf-8")
    print(base.with_suffix(".md").read_text())
    return stats


def _truncate(contender: Contender) -> None:
    recorder = contender.app.recorder
    datastore = getattr(recorder, "datastore", None)
    table = getattr(recorder, "events_table_name", "")
    if datastore is not None and table:
        with datastore.transaction(commit=True) as curs:
            curs.execute(f"TRUNCATE {table}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.es_app", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer samples (about a minute)")
    size.add_argument("--tiny", action="store_true", help="a few samples (smoke test)")
    parser.add_argument("--pg-dsn", help="PostgreSQL DSN for the library's PostgreSQL module")
    parser.add_argument("--url", help="a nats-server to use instead of starting one")
    parser.add_argument(
        "--sync-always", action="store_true", help="start nats-server with sync_interval: always"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args(argv)
    meta = machine()
    meta["preset"] = "tiny" if args.tiny else "quick" if args.quick else "full"
    meta["command"] = command_line(sys.argv[1:] if argv is None else argv).replace(
        "-m benchmarks", "-m benchmarks.es_app", 1
    )
    meta["started"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="angzarr-es-bench-") as tmp:
        meta["storage"] = filesystem(tmp)
        if args.url:
            meta["nats_mode"] = f"the server at {redact_url(args.url)}"
            run(args, args.url, Path(tmp), meta, t0)
        else:
            sync = "sync_interval: always" if args.sync_always else "default sync"
            meta["nats_mode"] = f"embedded nats-server, file store, {sync}"
            with EmbeddedServer(
                sync_always=args.sync_always, store_dir=Path(tmp) / "nats"
            ) as server:
                run(args, server.url, Path(tmp), meta, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
