"""Durable projectors on a three-server cluster (R3) with servers and projector
processes killed and restarted, and a soak with four projectors.

The contract checked (docs/reliability-projectors.md): every committed append
is handled at least once; redeliveries per fault stay below max_ack_pending;
an aggregate's commit is handled before an earlier one only across a fault
(a delivery lost with a consumer leader or with a projector process) and the
earlier one follows within ack_wait plus a few seconds.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

import angzarr_es
from angzarr_es import Delivery, filters
from angzarr_es.config import Config
from tests.support import jsadmin, projector_proc
from tests.support.cluster import Cluster, eventually, library_bytes, r3_stream, rss_mb
from tests.support.loadgen import (
    TYPED,
    Ledger,
    _leader_load,
    backoff,
    check_ledger,
    own_writer,
    shared_writer,
    until,
)

pytestmark = pytest.mark.timeout(180)

ROOT_DIR = Path(__file__).resolve().parents[2]
# How long an aggregate's later commit may be handled ahead of an earlier one
# whose delivery was lost in a fault: until that one's ack_wait expires, plus
# some slack (measured: gaps closed after at most 3.4 s with ack_wait 2 s).
GAP_BOUND = projector_proc.ACK_WAIT + 8.0
SOAK_SECONDS = float(os.environ.get("ANGZARR_SOAK_SECONDS", "8"))


@pytest.fixture
async def r3(cluster: Cluster) -> AsyncIterator[Config]:
    """A fresh R3 event stream (and dead-letter stream) on a healthy cluster."""
    async with r3_stream(cluster, own_dlq=True) as cfg:
        yield cfg


class Writers:
    """Writers on their own aggregates and on shared ones (real conflicts)."""

    def __init__(self, clients: list[angzarr_es.Client], own: int, shared: int) -> None:
        self.ledger = Ledger()
        self.stop = asyncio.Event()
        self.shared = [f"shared-{k}" for k in range(3)]
        names = [f"o{w}" for w in range(own)] + [f"s{w}" for w in range(shared)]
        self.roots = {f"own-{n}" for n in names if n.startswith("o")} | set(self.shared)
        self.tasks: list[asyncio.Task[None]] = []
        for w, name in enumerate(names):
            store = clients[w % len(clients)].store("player")
            if name.startswith("o"):
                coro = own_writer(store, name, self.ledger, self.stop)
            else:
                coro = shared_writer(store, name, self.shared, self.ledger, self.stop, w)
            self.tasks.append(asyncio.create_task(coro))

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)  # an untyped error in a writer fails here

    async def stored(self, cfg: Config) -> dict[str, int]:
        """Each root's stored length, read through the stream leader."""
        async with await angzarr_es.connect(config=cfg) as c:
            store = c.store("player")
            out = {}
            for root in self.roots:
                hist = await eventually(
                    lambda r=root: _leader_load(store, r),  # type: ignore[misc]
                    timeout=30,
                    what=f"load {root}",
                )
                out[root] = hist.next_sequence
            return out


class Seen:
    """What one logical projector handled, across its processes."""

    def __init__(self) -> None:
        self.count: collections.Counter[tuple[str, int]] = collections.Counter()
        self.stream_seq: dict[tuple[str, int], int] = {}
        self.next: dict[str, int] = {}
        self.sizes: dict[str, dict[int, int]] = {}
        self.phase = "start"
        self.early_in: collections.Counter[str] = collections.Counter()
        """Commits handled before a predecessor, by phase of the test."""
        self.early: list[tuple[str, int, int]] = []
        self.gaps: dict[tuple[str, int], float] = {}
        """Commits not handled yet whose successor was: since when."""
        self.gap_closed: list[float] = []
        """How long each such gap stayed open (s)."""
        """(root, first event sequence not handled yet, first sequence of the commit handled)."""
        self.handled = 0
        self.changed = asyncio.Event()
        self.times: list[float] = []

    def stall(self, since: float) -> float:
        """The longest pause between handled commits from `since` on."""
        ts = [since] + [t for t in self.times if t >= since]
        return max(b - a for a, b in itertools.pairwise(ts)) if len(ts) > 1 else 0.0

    def record(self, root: str, first: int, n: int, stream_seq: int) -> None:
        self.handled += 1
        self.times.append(time.monotonic())
        self.count[(root, first)] += 1
        self.stream_seq[(root, first)] = stream_seq
        self.sizes.setdefault(root, {})[first] = n
        have = self.next.get(root, 0)
        if first > have:
            self.early.append((root, have, first))
            self.early_in[self.phase] += 1
            self.gaps.setdefault((root, have), time.monotonic())
        opened = self.gaps.pop((root, first), None)
        if opened is not None:
            self.gap_closed.append(time.monotonic() - opened)
        # The handled prefix: a commit handled early counts once its predecessors are in.
        sizes = self.sizes[root]
        while have in sizes:
            have += sizes[have]
        self.next[root] = have
        self.changed.set()

    @property
    def duplicates(self) -> int:
        return sum(c - 1 for c in self.count.values())

    def covers(self, acked: list[tuple[str, int, list[str]]]) -> bool:
        return all((root, first) in self.count for root, first, _ in acked)

    async def grown(self, by: int, timeout: float, what: str) -> None:
        mark = self.handled
        try:
            async with asyncio.timeout(timeout):
                while self.handled < mark + by:
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what} "
                f"(handled {self.handled - mark} of {by} in phase {self.phase!r})"
            ) from None


class ProjectorProcess:
    """tests/support/projector_proc.py in a child process, reporting into a `Seen`."""

    def __init__(self, cfg: Config, name: str, seen: Seen) -> None:
        self.cfg, self.name, self.seen = cfg, name, seen
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.stopped = asyncio.Event()
        self.exited = asyncio.Event()

    async def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT_DIR))
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.projector_proc",
            msgspec.json.encode(self.cfg).decode(),
            self.name,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT_DIR,
            env=env,
        )
        self.ready.clear()
        self.exited.clear()
        self.reader = asyncio.create_task(self._read(self.proc))
        try:
            async with asyncio.timeout(40):
                ready = asyncio.ensure_future(self.ready.wait())
                exited = asyncio.ensure_future(self.exited.wait())
                await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
                ready.cancel()
                exited.cancel()
            assert self.ready.is_set(), "the projector process exited before it was ready"
        except TimeoutError:
            raise AssertionError("the projector process did not start within 40 s") from None

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            parts = line.decode().split()
            if parts[0] == "H":
                self.seen.record(parts[1], int(parts[2]), int(parts[3]), int(parts[4]))
            elif parts[0] == "READY":
                self.ready.set()
            elif parts[0] == "STOPPED":
                self.stopped.set()
        self.exited.set()

    async def kill(self) -> None:
        """SIGKILL: a crashed projector process."""
        assert self.proc is not None
        assert self.reader is not None
        self.proc.kill()
        await self.proc.wait()
        await self.reader

    async def stop(self) -> None:
        """SIGTERM: a clean stop (drains, hands back unstarted commits)."""
        assert self.proc is not None
        assert self.reader is not None
        if self.proc.returncode is None:
            self.proc.terminate()
            async with asyncio.timeout(30):
                await self.proc.wait()
        await self.reader


async def consumer_state(client: angzarr_es.Client, stream: str, name: str) -> dict[str, object]:
    raw = await jsadmin.consumer_info(client, stream, name)
    info: dict[str, object] = msgspec.json.decode(raw)
    assert "error" not in info, info
    return info


async def test_projector_through_failover_and_restarts(cluster: Cluster, r3: Config) -> None:
    """A projector process handles appends while (1) the stream leader is
    killed -9 and later restarted, (2) the projector process is killed -9 and a
    new one started, (3) the consumer's leader server is restarted cleanly,
    (4) the projector process is stopped cleanly and a new one started.
    Every committed append is handled at least once; redeliveries are at most
    max_ack_pending per fault; a commit handled ahead of an earlier one of its
    aggregate happens only after a fault, and the earlier one follows within
    GAP_BOUND."""
    stream, name = r3.nats.stream_name, "failover-projector"
    seen = Seen()
    clients = [await angzarr_es.connect(config=r3) for _ in range(2)]
    proc = ProjectorProcess(r3, name, seen)
    dupes: dict[str, int] = {}
    try:
        await proc.start()
        writers = Writers(clients, own=6, shared=4)
        admin = clients[0]
        await seen.grown(100, 30, "100 commits handled before the kill")

        # (1) The stream leader (which also leads most consumers) dies.
        leader = await cluster.stream_leader(admin, stream)
        assert leader is not None
        mark = seen.duplicates
        stalls: dict[str, float] = {}
        t0 = time.monotonic()
        seen.phase = "leader killed"
        cluster.kill(leader)
        await cluster.wait_for_leader(admin, stream, not_in=frozenset({leader}), timeout=30)
        await seen.grown(100, 30, "100 commits handled after the leader was killed")
        await asyncio.to_thread(cluster.restart, leader)
        await seen.grown(50, 30, "50 commits handled after the old leader rejoined")
        stalls["leader killed"] = seen.stall(t0)
        dupes["leader killed"] = seen.duplicates - mark

        # (2) The projector's process crashes; a new one takes over.
        mark = seen.duplicates
        seen.phase = "process killed"
        await proc.kill()
        t0 = time.monotonic()
        proc = ProjectorProcess(r3, name, seen)
        await proc.start()
        await seen.grown(100, 30, "100 commits handled by the new process")
        dupes["process killed"] = seen.duplicates - mark
        stalls["process killed"] = seen.stall(t0)

        # (3) The server leading the projector's consumer restarts cleanly.
        mark = seen.duplicates
        info = await consumer_state(admin, stream, name)
        consumer_leader = info["cluster"]["leader"]  # type: ignore[index]
        t0 = time.monotonic()
        seen.phase = "server restarted"
        await asyncio.to_thread(cluster.restart, consumer_leader)
        await seen.grown(100, 30, "100 commits handled after the consumer leader restarted")
        stalls["server restarted"] = seen.stall(t0)
        dupes["server restarted"] = seen.duplicates - mark

        # (4) The projector's process stops cleanly (SIGTERM) and a new one starts.
        mark = seen.duplicates
        seen.phase = "process restarted"
        await proc.stop()
        assert proc.stopped.is_set(), "the projector process did not stop cleanly"
        proc = ProjectorProcess(r3, name, seen)
        await proc.start()
        await seen.grown(100, 30, "100 commits handled after a clean restart")
        dupes["process restarted"] = seen.duplicates - mark

        mark = seen.duplicates
        seen.phase = "catching up"
        await writers.finish()
        stored = await writers.stored(r3)
        await eventually(
            lambda: until(all(seen.next.get(r, 0) == n for r, n in stored.items())),
            timeout=30,
            what=f"the projector to handle every stored commit: {stored} vs {seen.next}",
        )
        dupes["catching up"] = seen.duplicates - mark
        await proc.stop()
        assert proc.stopped.is_set(), "the projector process did not stop cleanly"
    finally:
        if proc.proc is not None and proc.proc.returncode is None:
            proc.proc.kill()
            await proc.proc.wait()
        for c in clients:
            await c.close()
    total = await check_ledger(r3, writers.ledger, writers.roots)
    gaps = sorted(seen.gap_closed)
    print(
        f"\nprojector through faults: {len(writers.ledger.acked)} acked appends, {total} events, "
        f"{seen.handled} handled ({len(seen.count)} distinct commits); redeliveries per fault "
        f"{dupes}; longest pause in handling per fault (s) "
        f"{ {k: round(v, 2) for k, v in stalls.items()} }; commits handled before a "
        f"predecessor, by phase {dict(seen.early_in)}; {len(gaps)} such gaps, closed after "
        f"max {max(gaps, default=0):.2f}s (median {gaps[len(gaps) // 2] if gaps else 0:.2f}s); "
        f"writer errors {dict(writers.ledger.errors)}"
    )
    assert seen.covers(writers.ledger.acked), "an acknowledged append was never handled"
    assert sum(stored.values()) == total
    assert not seen.gaps, f"predecessors never handled: {list(seen.gaps)[:5]}"
    # Order breaks only across a fault (a delivery lost with a consumer
    # leader or a process) and heals within ack_wait plus an election.
    assert seen.early_in["start"] == 0, "out of order before any fault"
    assert max(gaps, default=0) <= GAP_BOUND, f"a gap stayed open {max(gaps):.1f}s"
    bound = projector_proc.MAX_ACK_PENDING
    assert all(d <= bound for d in dupes.values()), f"redeliveries {dupes} over {bound}"


class Tally:
    """An in-process projector handler: which commits it handled, how often."""

    def __init__(self) -> None:
        # Keys are made here (f-strings), so nothing the library allocated is kept.
        self.count: collections.Counter[str] = collections.Counter()

    async def __call__(self, d: Delivery) -> None:
        self.count[f"{d.root}:{d.events[0].sequence}"] += 1

        self.checked = 0

    def covers(self, acked: list[tuple[str, int, list[str]]]) -> bool:
        """Whether every acked append was handled (resumes where the last call stopped)."""
        while self.checked < len(acked):
            root, first, _ = acked[self.checked]
            if f"{root}:{first}" not in self.count:
                return False
            self.checked += 1
        return True


async def loader(
    store: angzarr_es.EventStore, roots: list[str], ledger: Ledger, stop: asyncio.Event, i: int
) -> None:
    """Loads of aggregates the writers are appending to."""
    k = i
    while not stop.is_set():
        k += 7
        root = roots[k % len(roots)]
        try:
            hist = await store.load(root)
        except TYPED as exc:
            ledger.failed(exc)
            await backoff()
            continue
        assert [e.sequence for e in hist.events] == list(range(len(hist.events))), root
        ledger.by_writer["loads"] += 1


async def consumer_names(client: angzarr_es.Client, stream: str) -> list[str]:
    return sorted(await jsadmin.consumer_names(client, stream))


async def test_soak_with_projectors(cluster: Cluster, r3: Config) -> None:
    """ANGZARR_SOAK_SECONDS (default 8; the issue's full run is 60) of 64
    writers, 8 loaders (half replaying through ephemeral consumers) and 4
    durable projectors on the R3 cluster: only typed errors, every acked
    append handled by every projector, only the 4 durable consumers left (none
    once deleted), no subscriptions left, flat memory."""
    stream = r3.nats.stream_name
    consumer_cfg = Config(
        bus=msgspec.structs.replace(
            r3.bus, nats=msgspec.structs.replace(r3.nats, replay="consumer", cache_bytes=0)
        )
    )
    clients = [await angzarr_es.connect(config=r3) for _ in range(3)]
    clients.append(await angzarr_es.connect(config=consumer_cfg))
    for c in clients:  # nats-py opens its reply subscription on the first request
        await jsadmin.account_info(c)
    subs_before = [c.subscription_count for c in clients]
    tallies = [Tally() for _ in range(4)]
    projectors = [
        clients[i % 2].projector(
            f"soak-{i}", filters.domain("player"), tallies[i], concurrency=1 + 3 * (i % 2)
        )
        for i in range(4)
    ]
    samples: list[float] = []
    try:
        for p in projectors:
            await p.start()
        writers = Writers(clients[:3], own=48, shared=16)
        roots = sorted(writers.roots)
        for i in range(8):
            store = clients[3 if i % 2 else i % 3].store("player")
            writers.tasks.append(
                asyncio.create_task(loader(store, roots, writers.ledger, writers.stop, i))
            )
        started = time.monotonic()
        while time.monotonic() - started < SOAK_SECONDS:
            samples.append(rss_mb())
            if not tracemalloc.is_tracing() and time.monotonic() - started > SOAK_SECONDS / 3:
                tracemalloc.start()  # after warm-up: caches and buffers are full by now
            await asyncio.sleep(0.5)  # sampling period, not a wait for a condition
        await writers.finish()
        # Held by the library and nats-py since warm-up, once the writers have
        # stopped (projectors still hold at most their buffers), without the
        # hot-aggregate caches (bounded by design). Tracing slows Python down
        # ~3x, so it stops before the projectors catch up.
        for c in clients:
            c.clear_cache()
        held = library_bytes(tracemalloc.take_snapshot()) / 1e6
        tracemalloc.stop()
        acked = writers.ledger.acked
        load_end = time.monotonic()
        cpu_start = sum(os.times()[:2])
        server_cpu_start = {n: _cpu(s.proc.pid) for n, s in cluster.servers.items() if s.proc}
        try:
            await eventually(
                lambda: until(all(t.covers(acked) for t in tallies)),
                timeout=60,
                what="every projector to handle every acked append",
            )
        except AssertionError:
            for i, (t, p) in enumerate(zip(tallies, projectors, strict=True)):
                missing = [a for a in acked if f"{a[0]}:{a[1]}" not in t.count]
                info = await consumer_state(clients[0], stream, p.settings.durable)
                print(
                    f"projector {i}: {len(missing)} missing, e.g. {missing[:3]}; {p.stats}; "
                    f"running {p.running}; in hand {p.in_hand}; "
                    f"pending {info.get('num_pending')} ack pending "
                    f"{info.get('num_ack_pending')} redelivered {info.get('num_redelivered')} "
                    f"waiting {info.get('num_waiting')}"
                )
            raise
        catch_up = time.monotonic() - load_end
        cpu = (sum(os.times()[:2]) - cpu_start) / catch_up
        server_cpu = {
            n: round((_cpu(cluster.servers[n].proc.pid) - c) / catch_up, 2)  # type: ignore[union-attr]
            for n, c in server_cpu_start.items()
        }
        durables = await eventually(
            lambda: _only_durables(clients[0], stream),
            timeout=15,
            what="replay consumers to be gone",
        )
        stats = [p.stats for p in projectors]
        for p in projectors:
            await p.delete()
        leftover = [c.subscription_count for c in clients]
        after_delete = await eventually(
            lambda: _no_consumers(clients[0], stream),
            timeout=15,
            what="the durable consumers to be deleted",
        )
    finally:
        for p in projectors:
            await p.stop()
        for c in clients:
            await c.close()
    total = await check_ledger(r3, writers.ledger, writers.roots)
    handled = [sum(t.count.values()) for t in tallies]
    dupes = [sum(n - 1 for n in t.count.values()) for t in tallies]
    print(
        f"\nprojector soak {SOAK_SECONDS:.0f}s: {len(acked)} acked appends "
        f"({len(acked) / SOAK_SECONDS:.0f}/s), {writers.ledger.by_writer['loads']} loads, "
        f"{total} events; projectors caught up {catch_up:.1f}s after the load (CPU use "
        f"meanwhile: client {cpu:.2f}, servers {server_cpu}); "
        f"handled per projector {handled}, redeliveries {dupes}; "
        f"errors {dict(writers.ledger.errors)}; client RSS {samples[0]:.0f} -> "
        f"{samples[-1]:.0f} MB; held by angzarr_es/nats-py since warm-up {held:.2f} MB"
    )
    assert durables == [f"soak-{i}" for i in range(4)]
    assert after_delete == []
    assert leftover == subs_before, "subscriptions leaked"
    assert all(s.failed == 0 and s.dead_lettered == 0 for s in stats), stats
    assert writers.ledger.by_writer["loads"] > 0
    assert held < 1.0, f"the library holds {held:.1f} MB allocated after warm-up"


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid`."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _only_durables(client: angzarr_es.Client, stream: str) -> list[str] | None:
    names = await consumer_names(client, stream)
    return names if all(n.startswith("soak-") for n in names) else None


async def _no_consumers(client: angzarr_es.Client, stream: str) -> list[str] | None:
    names = await consumer_names(client, stream)
    return names if not names else None
