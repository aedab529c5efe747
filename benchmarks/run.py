"""The benchmark run: start a nats-server, measure every operation against its
baselines, write JSON, Markdown and a chart."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

import angzarr_es
from angzarr_es import ConcurrencyError, codec
from angzarr_es.config import Config, NatsConfig
from angzarr_es.embedded import EmbeddedServer
from angzarr_es.pb import player_pb2
from angzarr_es.store import EventStore
from benchmarks import peers, report
from benchmarks.harness import Case, Measured, filesystem, machine, measure, summarize
from benchmarks.raw import RawClient
from benchmarks.wire import Unsupported, WireClient

STREAM = "bench-events"
PREFIX = "bench"
DOMAIN = "player"

# Contender names, used as keys in the results and the targets.
OURS = "angzarr_es"
OURS_CONSUMER = "angzarr_es (consumer)"
OURS_ONE = "angzarr_es, 1 event per call"
FLOOR = "raw nats-py (floor)"
FLOOR_DECODED = "raw nats-py (floor + event decode)"
NAIVE = "naive nats-py"
CODEC = "codec only (in memory)"
WIRE = "socket only (no client)"


@dataclass(frozen=True, slots=True)
class Sizes:
    samples: int
    rounds: int
    warmup: int
    load_sizes: tuple[int, ...]
    load_samples: dict[int, int]
    iter_events: int
    writers: int
    writer_appends: int
    writer_rounds: int


PRESETS = {
    "full": Sizes(
        samples=2000,
        rounds=20,
        warmup=50,
        load_sizes=(10, 100, 1000, 10_000),
        load_samples={10: 500, 100: 400, 1000: 160, 10_000: 10},
        iter_events=100_000,
        writers=64,
        writer_appends=40,
        writer_rounds=5,
    ),
    "quick": Sizes(
        samples=400,
        rounds=8,
        warmup=20,
        load_sizes=(10, 100, 1000),
        load_samples={10: 100, 100: 60, 1000: 12},
        iter_events=20_000,
        writers=64,
        writer_appends=15,
        writer_rounds=3,
    ),
    "tiny": Sizes(
        samples=20,
        rounds=2,
        warmup=2,
        load_sizes=(10, 100),
        load_samples={10: 4, 100: 4},
        iter_events=1000,
        writers=64,
        writer_appends=2,
        writer_rounds=1,
    ),
}


def event(i: int = 0) -> player_pb2.FundsDeposited:
    return player_pb2.FundsDeposited(amount_cents=100 + i, currency="EUR")


@dataclass
class Run:
    """Everything one run talks to."""

    sizes: Sizes
    url: str
    ours: angzarr_es.Client
    ours_consumer: angzarr_es.Client
    rival: angzarr_es.Client
    raw: RawClient
    wire: WireClient | None
    recorders: list[peers.Recorder]
    codec_only: peers.CodecOnly
    stream: str = STREAM
    prefix: str = PREFIX
    results: list[Measured] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)
    server_version: str = ""

    @property
    def store(self) -> EventStore:
        return self.ours.store(DOMAIN)

    def keep(self, measured: list[Measured]) -> None:
        self.results.extend(measured)
        for m in measured:
            s = m.stats
            print(
                f"  {s.op:<34} {s.contender:<26} p50 {s.p50:9.1f}us  p99 {s.p99:9.1f}us"
                f"  {s.ops_per_s:9.0f}/s",
                flush=True,
            )

    async def timed(self, op: str, cases: Sequence[Case], samples: int, events: int = 1) -> None:
        s = self.sizes
        self.keep(
            await measure(
                op,
                cases,
                samples=samples,
                rounds=min(s.rounds, samples),
                warmup=s.warmup,
                events_per_op=events,
            )
        )


def _sync(fn: Callable[[int], object]) -> Callable[[int], Awaitable[object]]:
    async def run(i: int) -> object:
        return fn(i)

    return run


# -- appends -------------------------------------------------------------------


def _append_cases(run: Run, count: int) -> list[Case]:
    """Append `count` events per call to an aggregate whose position is known."""
    store = run.store
    events = [event(i) for i in range(count)]
    cases: list[Case] = []

    ours_root = uuid.uuid4()
    ours_next = [0]

    async def ours(_: int) -> object:
        result = await store.append(ours_root, events, expected=ours_next[0])
        ours_next[0] = result.next_sequence
        return result

    cases.append(Case(OURS, ours))

    floor_subject = store.subject(uuid.uuid4())
    floor_payload = codec.encode_commit(
        domain=DOMAIN,
        root=b"floor",
        first_sequence=0,
        events=[codec.pack(e) for e in events],
        correlation_id="",
        created_at=dt.datetime.now(dt.UTC),
    )
    floor_last = [0]

    async def floor(_: int) -> object:
        ack = await run.raw.request_append(floor_subject, floor_payload, floor_last[0])
        floor_last[0] = ack.seq
        return ack

    cases.append(Case(FLOOR, floor))

    if run.wire is not None:
        cases.append(
            Case(WIRE, _wire_appender(run.wire, store.subject(uuid.uuid4()), floor_payload))
        )

    naive_subject = store.subject(uuid.uuid4())
    naive_state = [0, 0]  # next sequence, last stream sequence

    async def naive(_: int) -> object:
        payload = codec.encode_commit(
            domain=DOMAIN,
            root=b"naive",
            first_sequence=naive_state[0],
            events=[codec.pack(e) for e in events],
            correlation_id="",
            created_at=dt.datetime.now(dt.UTC),
        )
        naive_state[1] = await run.raw.naive_append(naive_subject, payload, naive_state[1])
        naive_state[0] += count
        return None

    cases.append(Case(NAIVE, naive))

    for recorder in run.recorders:
        cases.append(Case(recorder.name, _sync(_recorder_appender(recorder, events))))

    codec_next = [0]

    def codec_append(_: int) -> object:
        run.codec_only.append("codec-append", codec_next[0], events)
        codec_next[0] += count
        return None

    cases.append(Case(CODEC, _sync(codec_append)))
    return cases


def _wire_appender(
    wire: WireClient, subject: str, payload: bytes
) -> Callable[[int], Awaitable[object]]:
    last = [0]

    async def append(_: int) -> object:
        last[0] = await wire.append(subject, payload, last[0])
        return None

    return append


def _recorder_appender(
    recorder: peers.Recorder, events: list[player_pb2.FundsDeposited]
) -> Callable[[int], object]:
    root = uuid.uuid4()
    state = [0]

    def append(_: int) -> object:
        recorder.append(root, state[0], events)
        state[0] += len(events)
        return None

    return append


async def bench_appends(run: Run) -> None:
    s = run.sizes
    print("appends", flush=True)
    await run.timed("append 1 event (cached)", _append_cases(run, 1), s.samples)
    # Ours with one event per call again, interleaved with the 10-event
    # appends, so their ratio does not depend on when the machine was busy.
    ten = _append_cases(run, 10)
    one = _append_cases(run, 1)[0]
    ten.insert(1, Case(OURS_ONE, one.run))
    await run.timed("append 10 events (cached)", ten, s.samples // 2, 10)

    # Without a prior load: this process has no cached position for the
    # aggregate, as in a stateless command handler that was handed `expected`.
    store = run.store
    root = uuid.uuid4()
    await store.append(root, [event(i) for i in range(10)], expected=0)
    state = [10]

    async def forget(_: int) -> object:
        store._ctx.cache.clear()
        return None

    async def ours(_: int) -> object:
        result = await store.append(root, [event()], expected=state[0])
        state[0] = result.next_sequence
        return result

    floor_subject = store.subject(uuid.uuid4())
    payload = codec.encode_commit(
        domain=DOMAIN,
        root=b"floor",
        first_sequence=0,
        events=[codec.pack(event())],
        correlation_id="",
        created_at=dt.datetime.now(dt.UTC),
    )
    await run.raw.request_append(floor_subject, payload, 0)

    async def floor(_: int) -> object:
        return await run.raw.lookup_then_append(floor_subject, payload)

    await run.timed(
        "append 1 event (lookup, existing)",
        [Case(OURS, ours, prepare=forget), Case(FLOOR, floor)],
        s.samples // 2,
    )

    async def ours_new(_: int) -> object:
        return await store.append(uuid.uuid4(), [event()], expected=0)

    async def floor_new(_: int) -> object:
        return await run.raw.request_append(store.subject(uuid.uuid4()), payload, 0)

    new_cases = [Case(OURS, ours_new, prepare=forget), Case(FLOOR, floor_new)]
    for recorder in run.recorders:

        def rec_new(_: int, recorder: peers.Recorder = recorder) -> object:
            recorder.append(uuid.uuid4(), 0, [event()])
            return None

        new_cases.append(Case(recorder.name, _sync(rec_new)))
    await run.timed("append 1 event (new aggregate)", new_cases, s.samples // 2)


async def bench_conflicts(run: Run) -> None:
    print("conflicts", flush=True)
    s = run.sizes
    store = run.store
    rival = run.rival.store(DOMAIN)
    root = uuid.uuid4()
    await store.append(root, [event()], expected=0)
    mine = [1]
    theirs = [1]
    await store.load(root)

    async def rival_writes(_: int) -> object:
        result = await rival.append(root, [event()], expected=theirs[0])
        theirs[0] = result.next_sequence
        return result

    async def ours(_: int) -> object:
        try:
            await store.append(root, [event()], expected=mine[0])
        except ConcurrencyError as exc:
            mine[0] = exc.actual
            return exc
        raise RuntimeError("a stale append was accepted")

    local_root = uuid.uuid4()
    await store.append(local_root, [event(), event()], expected=0)

    async def ours_local(_: int) -> object:
        try:
            await store.append(local_root, [event()], expected=1)
        except ConcurrencyError as exc:
            return exc
        raise RuntimeError("a stale append was accepted")

    floor_subject = store.subject(uuid.uuid4())
    payload = codec.encode_commit(
        domain=DOMAIN,
        root=b"floor",
        first_sequence=0,
        events=[codec.pack(event())],
        correlation_id="",
        created_at=dt.datetime.now(dt.UTC),
    )
    ack = await run.raw.request_append(floor_subject, payload, 0)
    await run.raw.request_append(floor_subject, payload, ack.seq)

    async def floor(_: int) -> object:
        ack = await run.raw.request_append(floor_subject, payload, 1)
        if ack.error is None:
            raise RuntimeError("the server accepted a stale append")
        return ack

    cases = [
        Case(OURS, ours, prepare=rival_writes),
        Case(FLOOR, floor),
        Case(OURS + " (stale locally)", ours_local),
    ]
    for recorder in run.recorders:
        rec_root = uuid.uuid4()
        recorder.append(rec_root, 0, [event()])

        def rec_conflict(
            _: int, recorder: peers.Recorder = recorder, rec_root: uuid.UUID = rec_root
        ) -> object:
            if not recorder.conflicts(rec_root, 0, event()):
                raise RuntimeError(f"{recorder.name} accepted a duplicate version")
            return None

        cases.append(Case(recorder.name, _sync(rec_conflict)))
    await run.timed("conflict (stale expected)", cases, s.samples // 4)


# -- loads ---------------------------------------------------------------------


async def fill(run: Run, root: uuid.UUID, total: int, per_commit: int) -> None:
    """Write `total` events to `root` in commits of `per_commit`, pipelined."""
    subject = run.store.subject(root)
    payloads = [
        codec.encode_commit(
            domain=DOMAIN,
            root=root.bytes,
            first_sequence=first,
            events=[codec.pack(event(i)) for i in range(first, min(first + per_commit, total))],
            correlation_id="",
            created_at=dt.datetime.now(dt.UTC),
        )
        for first in range(0, total, per_commit)
    ]
    await run.raw.bulk_fill(subject, payloads)


async def bench_loads(run: Run) -> None:
    print("loads", flush=True)
    s = run.sizes
    for size in s.load_sizes:
        for per_commit in (1, 10):
            root = uuid.uuid4()
            await fill(run, root, size, per_commit)
            subject = run.store.subject(root)
            cases = [
                Case(OURS, _ours_loader(run.ours.store(DOMAIN), root, size)),
                Case(OURS_CONSUMER, _ours_loader(run.ours_consumer.store(DOMAIN), root, size)),
            ]

            async def floor(_: int, subject: str = subject, size: int = size) -> object:
                books = await run.raw.direct_load(subject)
                got = sum(len(book.pages) for book in books)
                if got != size:
                    raise RuntimeError(f"floor read {got} of {size} events")
                return books

            async def floor_decoded(_: int, subject: str = subject, size: int = size) -> object:
                events = await run.raw.direct_load(subject, decode=True)
                if len(events) != size:
                    raise RuntimeError(f"floor read {len(events)} of {size} events")
                return events

            async def naive(_: int, subject: str = subject, size: int = size) -> object:
                return await run.raw.naive_load(subject, size)

            async def tidy(_: int) -> object:
                await run.raw.delete_leftovers()
                return None

            cases += [
                Case(FLOOR, floor),
                Case(FLOOR_DECODED, floor_decoded),
                Case(NAIVE, naive, prepare=tidy),
            ]
            if run.wire is not None:
                cases += await _wire_loader(run.wire, subject, size // per_commit)
            codec_root = f"load-{size}-{per_commit}"
            for first in range(0, size, per_commit):
                run.codec_only.append(
                    codec_root, first, [event(i) for i in range(first, first + per_commit)]
                )

            def codec_load(_: int, codec_root: str = codec_root, size: int = size) -> object:
                events = run.codec_only.load(codec_root)
                if len(events) != size:
                    raise RuntimeError("codec-only load lost events")
                return events

            cases.append(Case(CODEC, _sync(codec_load)))
            if per_commit == 1:
                for recorder in run.recorders:
                    rec_root = uuid.uuid4()
                    for first in range(0, size, 100):
                        recorder.append(
                            rec_root,
                            first,
                            [event(i) for i in range(first, min(first + 100, size))],
                        )

                    def rec_load(
                        _: int,
                        recorder: peers.Recorder = recorder,
                        rec_root: uuid.UUID = rec_root,
                        size: int = size,
                    ) -> object:
                        events = recorder.load(rec_root)
                        if len(events) != size:
                            raise RuntimeError(f"{recorder.name} lost events")
                        return events

                    cases.append(Case(recorder.name, _sync(rec_load)))
            await run.timed(
                f"load {size} events ({per_commit}/commit)",
                cases,
                s.load_samples[size],
                size,
            )
            await run.raw.delete_leftovers()


async def _wire_loader(wire: WireClient, subject: str, commits: int) -> list[Case]:
    """The socket-only load, if one batch holds the whole aggregate."""
    request = wire.load_request(subject, commits)
    got = await wire.check_load(request)
    if got != commits:
        print(f"  {WIRE}: one batch held {got} of {commits} commits; row left out")
        return []

    async def load(_: int) -> object:
        return await wire.load(request)

    return [Case(WIRE, load)]


def _ours_loader(
    store: EventStore, root: uuid.UUID, size: int
) -> Callable[[int], Awaitable[object]]:
    async def load(_: int) -> object:
        history = await store.load(root)
        for recorded in history.events:
            recorded.event  # noqa: B018 - the caller reads every event
        if len(history.events) != size:
            raise RuntimeError(f"loaded {len(history.events)} of {size} events")
        return history

    return load


# -- concurrency -----------------------------------------------------------------


async def bench_writers(run: Run) -> None:
    s = run.sizes
    print("concurrent writers", flush=True)
    store = run.store
    payload = codec.encode_commit(
        domain=DOMAIN,
        root=b"floor",
        first_sequence=0,
        events=[codec.pack(event())],
        correlation_id="",
        created_at=dt.datetime.now(dt.UTC),
    )

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
            body = codec.encode_commit(
                domain=DOMAIN,
                root=b"naive",
                first_sequence=seq,
                events=[codec.pack(event())],
                correlation_id="",
                created_at=dt.datetime.now(dt.UTC),
            )
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
    for _ in range(s.writer_rounds + 1):  # the first round warms up
        for name, writer in writers.items():
            latencies: list[int] = []
            t0 = time.perf_counter_ns()
            await asyncio.gather(*(writer(latencies) for _ in range(s.writers)))
            elapsed = time.perf_counter_ns() - t0
            if _ == 0:
                continue
            samples[name].extend(latencies)
            wall[name] += elapsed
            round_rates[name].append(round(len(latencies) / (elapsed / 1e9)))
    measured = []
    for name in writers:
        m = summarize(op, name, samples[name], 0, 1, [])
        rate = len(samples[name]) / (wall[name] / 1e9)
        stats = msgspec.structs.replace(
            m.stats, ops_per_s=rate, events_per_s=rate, extra={"rounds": len(round_rates[name])}
        )
        stats = msgspec.structs.replace(stats, round_p50s=[float(r) for r in round_rates[name]])
        measured.append(Measured(stats, m.samples_us))
    run.keep(measured)


# -- memory ----------------------------------------------------------------------


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


# -- driver ----------------------------------------------------------------------


def _config(
    url: str, replay: str, stream: str = STREAM, prefix: str = PREFIX, replicas: int = 1
) -> Config:
    nats = NatsConfig(
        url=url,
        stream_name=stream,
        subject_prefix=prefix,
        replicas=replicas,
        replay="consumer" if replay == "consumer" else "direct",
        request_timeout=10.0,
    )
    return Config(bus=msgspec.structs.replace(Config().bus, nats=nats))


@dataclass(frozen=True, slots=True)
class Target:
    """The server a run measures, and the names its streams get there."""

    url: str
    external: bool = False
    replicas: int = 1
    stream: str = STREAM
    prefix: str = PREFIX

    @classmethod
    def elsewhere(cls, url: str, replicas: int) -> Target:
        """A server this run did not start: streams named for this run alone,
        so that deleting them afterwards touches nothing else. Every contender
        connects to the first URL given, so none is a route hop closer to the
        stream leader than another."""
        tag = uuid.uuid4().hex[:8]
        first = url.split(",")[0].strip()
        return cls(first, True, replicas, f"bench-{tag}-events", f"bench-{tag}")

    def config(self, replay: str) -> Config:
        return _config(self.url, replay, self.stream, self.prefix, self.replicas)


def _find_pg(dsn: str | None) -> tuple[str | None, str]:
    """A PostgreSQL DSN to use, and why (or why not)."""
    candidates = [dsn] if dsn else []
    if not dsn:
        env = os.environ.get("ANGZARR_BENCH_PG_DSN")
        candidates = [env] if env else ["postgresql://postgres@127.0.0.1:5432/postgres"]
    try:
        import psycopg
    except ImportError:
        return None, "psycopg is not installed"
    for candidate in candidates:
        try:
            with psycopg.connect(candidate, connect_timeout=2) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                sync = conn.execute("SHOW synchronous_commit").fetchone()
                fsync = conn.execute("SHOW fsync").fetchone()
            return candidate, (
                f"PostgreSQL {row[0] if row else '?'}, synchronous_commit="
                f"{sync[0] if sync else '?'}, fsync={fsync[0] if fsync else '?'}"
            )
        except psycopg.Error as exc:
            reason = f"no PostgreSQL at {hide_password(candidate)}: {str(exc).strip()[:120]}"
            if dsn:
                raise SystemExit(f"--pg-dsn: {reason}") from exc
    return None, reason if candidates else "no PostgreSQL DSN"


async def run_all(args: argparse.Namespace, sizes: Sizes, target: Target, tmp: Path) -> Run:
    url = target.url
    async with contextlib.AsyncExitStack() as stack:
        # Each cleanup is registered as soon as there is something to clean up,
        # so a failure part way leaves no connection and (elsewhere) no stream.
        ours = await angzarr_es.connect(config=target.config("direct"))
        stack.push_async_callback(ours.close)
        if target.external:
            names = (target.stream, ours.config.nats.snapshot_stream)
            stack.push_async_callback(_drop_streams, ours, names)
        await ours.provision()
        ours_consumer = await angzarr_es.connect(config=target.config("consumer"))
        stack.push_async_callback(ours_consumer.close)
        rival = await angzarr_es.connect(config=target.config("direct"))
        stack.push_async_callback(rival.close)
        raw = await RawClient.connect(url, target.stream)
        stack.push_async_callback(raw.close)
        recorders: list[peers.Recorder] = []
        notes: list[str] = []
        wire: WireClient | None = None
        try:
            wire = await WireClient.connect(url, target.stream)
            stack.push_async_callback(wire.close)
        except Unsupported as exc:
            notes.append(f"no {WIRE} rows: {exc}")
        if args.peers and peers.available():
            recorders.append(peers.Recorder.sqlite(tmp / "eventsourcing.sqlite"))
            stack.callback(recorders[0].close)
            notes.append(recorders[0].settings())
            pg_dsn, why = _find_pg(args.pg_dsn)
            notes.append(why)
            if pg_dsn:
                recorders.append(peers.Recorder.postgres(pg_dsn))
                stack.callback(recorders[-1].close)
        elif args.peers:
            notes.append("eventsourcing is not installed: pip install 'angzarr-es[bench]'")
        run = Run(
            sizes=sizes,
            url=url,
            ours=ours,
            ours_consumer=ours_consumer,
            rival=rival,
            raw=raw,
            wire=wire,
            recorders=recorders,
            codec_only=peers.CodecOnly(DOMAIN),
            stream=target.stream,
            prefix=target.prefix,
            notes=notes,
            server_version=raw.server_version,
        )
        await bench_appends(run)
        await bench_conflicts(run)
        await bench_loads(run)
        await bench_writers(run)
        await bench_iter(run)
        return run


async def _drop_streams(client: angzarr_es.Client, names: Sequence[str]) -> None:
    """Delete the run's streams on a server it did not start; say so if one stays."""
    for name in names:
        try:
            await client._wire.js.call(f"$JS.API.STREAM.DELETE.{name}")
        except Exception as exc:  # noqa: BLE001 - the other stream and the report go on
            print(f"could not delete stream {name}: {exc}", file=sys.stderr)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer samples (under a minute)")
    size.add_argument("--tiny", action="store_true", help="a few samples (smoke test)")
    parser.add_argument(
        "--sync-always", action="store_true", help="nats-server with sync_interval: always"
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("NATS_URL") or None,
        help="measure the server at this URL (of a comma-separated list, the first; with "
        "--replicas, its cluster) instead of starting one (default: $NATS_URL); the run's "
        "streams get names of their own and are deleted after",
    )
    parser.add_argument(
        "--replicas", type=int, default=1, help="replicas of the run's streams (with --url)"
    )
    parser.add_argument("--pg-dsn", help="PostgreSQL DSN for the eventsourcing peer")
    parser.add_argument(
        "--no-peers", dest="peers", action="store_false", help="skip the eventsourcing peers"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("docs/benchmarks"), help="where to write results"
    )
    parser.add_argument("--no-chart", dest="chart", action="store_false", help="skip the PNG")
    args = parser.parse_args(argv)
    if args.url and args.sync_always:
        parser.error("--sync-always configures the server this run starts; not with --url")
    if args.replicas != 1 and not args.url:
        parser.error("--replicas needs a cluster: give its servers with --url")
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    return args


# A URL's whole user information (a password, or a token standing alone), and a
# libpq key=value password, quoted or not.
_USERINFO = re.compile(r"(://)[^/\s]*@")
_PG_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def hide_password(text: str) -> str:
    """`text` (a URL or DSN) with any credentials replaced by ***."""
    return _PG_PASSWORD.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def command_line(argv: Sequence[str]) -> str:
    """The command that made a run, for its results, with any password hidden."""
    return shlex.join(["python", "-m", "benchmarks", *map(hide_password, argv)])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    preset = "tiny" if args.tiny else "quick" if args.quick else "full"
    sizes = PRESETS[preset]
    mode = "external" if args.url else "sync-always" if args.sync_always else "default"
    meta = machine()
    meta["preset"] = preset
    meta["command"] = command_line(sys.argv[1:] if argv is None else argv)
    meta["started"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="angzarr-bench-") as tmp:
        if args.url:
            target = Target.elsewhere(args.url, args.replicas)
            meta["nats_mode"] = (
                f"the server at {hide_password(target.url)}, its own storage and sync "
                f"settings, R{args.replicas} streams"
            )
            meta["storage"] = "the server's own"
            print(f"benchmarking {meta['nats_mode']}; streams {target.stream}, deleted after")
            run = asyncio.run(run_all(args, sizes, target, Path(tmp)))
            meta["nats-server"] = run.server_version
        else:
            meta["nats_mode"] = (
                "file store, sync_interval: always"
                if args.sync_always
                else "file store, default sync"
            )
            meta["storage"] = filesystem(tempfile.gettempdir())
            with EmbeddedServer(
                sync_always=args.sync_always, store_dir=Path(tmp) / "nats"
            ) as server:
                print(f"nats-server {meta['nats-server']} at {server.url} ({meta['nats_mode']})")
                run = asyncio.run(run_all(args, sizes, Target(server.url), Path(tmp)))
    meta["seconds"] = f"{time.perf_counter() - t0:.1f}"
    meta["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    suffix = mode if preset == "full" else f"{mode}-{preset}"
    paths = report.write(
        args.out, suffix, meta, run.notes, run.results, run.memory, chart_png=args.chart
    )
    if preset == "full" and not args.url:
        readme = report.update_readme(args.out)
        if readme is not None:
            paths.append(readme)
    for path in paths:
        print(f"wrote {path}")
    return 0
