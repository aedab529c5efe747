"""A Jepsen-style run: writers, a projector and a random nemesis on a
three-server cluster, then a check of the whole history.

- Writers (two connections): half append to an aggregate of their own, half
  read-then-append on four shared ones. Every command carries an idempotency
  key and is retried with it after StoreTimeout or StoreUnavailable until it
  is known stored (a result) or known refused (ConcurrencyError).
- A durable projector (concurrency 4) records every delivery.
- The nemesis, every 2-5 s, picks one of: kill -9 a server and restart it,
  SIGSTOP one for a while, kill -9 the stream's leader and restart it, kill
  -9 two servers (quorum lost) and restart them. Its seed is printed;
  ANGZARR_CHAOS_SEED replays it.

The check at the end: every acknowledged append present once, at its
sequence; no payload stored twice; every history dense; no two acknowledged
appends in one slot; a refused command absent; a command whose outcome is
still unknown stored at most once; the projector complete and, on first
delivery, in order per aggregate; every error of the project's own types.
A failure saves the servers' logs and the history to a temporary directory
it names.

ANGZARR_CHAOS_SECONDS sets the length (default 60; docs/reliability.md has
the figures of longer runs).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import msgspec
import pytest

import angzarr_es
from angzarr_es import filters
from angzarr_es.config import Config
from angzarr_es.errors import AngzarrESError, ConcurrencyError, StoreTimeout
from tests.support.cluster import Cluster, eventually
from tests.support.loadgen import _leader_load, config_of, tagged, until

SECONDS = float(os.environ.get("ANGZARR_CHAOS_SECONDS", "60"))
SEED = int(os.environ.get("ANGZARR_CHAOS_SEED", "0")) or random.randrange(1, 2**31)
SHARED = [f"shared-{k}" for k in range(4)]
OUTAGE = 1.0
"""Seconds without any acknowledged append that count as a write outage."""

pytestmark = pytest.mark.timeout(SECONDS + 300)


@dataclass
class Command:
    """One command a writer sent, and what it finally learnt."""

    writer: str
    root: str
    tag: str
    expected: int
    started: float
    outcome: str = "pending"  # "stored", "refused", "unknown"
    first: int = -1
    next: int = -1
    duplicate: bool = False
    ended: float = 0.0
    errors: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        met = dict(collections.Counter(self.errors))
        return (
            f"{self.tag} on {self.root} at expected {self.expected}: {self.outcome}"
            + (f" at {self.first}" if self.outcome == "stored" else "")
            + f" after {self.ended - self.started:.1f}s, errors {met}"
        )


@dataclass
class History:
    seed: int
    commands: list[Command] = field(default_factory=list)
    nemesis: list[tuple[float, float, str]] = field(default_factory=list)
    deliveries: list[tuple[str, int, int, int]] = field(default_factory=list)
    """(root, first sequence, next sequence, delivery count), in handling order."""
    foreign: list[str] = field(default_factory=list)
    """Errors not of the project's own types."""
    stored: dict[str, list[str]] = field(default_factory=dict)

    def save(self, cluster: Cluster, logs: dict[str, list[str]]) -> Path:
        out = Path(tempfile.mkdtemp(prefix="angzarr-nemesis-"))
        (out / "history.json").write_text(
            json.dumps(
                {
                    "seed": self.seed,
                    "commands": [asdict(c) for c in self.commands],
                    "nemesis": self.nemesis,
                    "deliveries": self.deliveries,
                    "foreign": self.foreign,
                    "stored": self.stored,
                },
                indent=1,
            )
        )
        for name, server in cluster.servers.items():
            lines = [*logs.get(name, []), *server.log]
            (out / f"{name}.log").write_text("\n".join(lines) + "\n")
        return out


async def pause() -> None:
    """A writer's pause after a failure (the loop clock, like the nemesis)."""
    await asyncio.sleep(0.02)


async def settle(
    store: angzarr_es.EventStore, cmd: Command, history: History, deadline: float
) -> None:
    """Send `cmd` with its key until it is known stored or refused, or `deadline`."""
    unknown = False
    while True:
        try:
            res = await store.append(
                cmd.root, [tagged(cmd.tag)], expected=cmd.expected, idempotency_key=cmd.tag
            )
        except ConcurrencyError as exc:
            cmd.errors.append(type(exc).__name__)
            cmd.outcome = "refused"
            break
        except AngzarrESError as exc:
            cmd.errors.append(type(exc).__name__)
            unknown = unknown or isinstance(exc, StoreTimeout)
            if time.monotonic() > deadline:
                cmd.outcome = "unknown" if unknown else "refused"
                break
            await pause()
            continue
        except Exception as exc:  # noqa: BLE001 - recorded: the check fails on it
            history.foreign.append(f"{cmd.tag}: {exc!r}")
            cmd.outcome = "unknown"
            break
        cmd.outcome, cmd.first, cmd.next, cmd.duplicate = (
            "stored",
            res.first_sequence,
            res.next_sequence,
            res.duplicate,
        )
        break
    cmd.ended = time.monotonic()


async def position(store: angzarr_es.EventStore, root: str, history: History) -> int:
    while True:
        try:
            return await store.next_sequence(root)
        except AngzarrESError:
            await pause()
        except Exception as exc:
            history.foreign.append(f"next_sequence({root}): {exc!r}")
            raise


async def writer(
    store: angzarr_es.EventStore,
    name: str,
    history: History,
    stop: asyncio.Event,
    drain: list[float],
    rnd: random.Random,
) -> None:
    own = name.startswith("o")
    nxt: int | None = 0
    i = 0
    while not stop.is_set():
        i += 1
        root = f"own-{name}" if own else rnd.choice(SHARED)
        if nxt is None or not own:
            nxt = await position(store, root, history)
        cmd = Command(name, root, f"{name}:{i}", nxt, time.monotonic())
        history.commands.append(cmd)
        await settle(store, cmd, history, drain[0])
        # Refused: someone else moved the aggregate (shared), so read it again.
        nxt = cmd.next if cmd.outcome == "stored" else None
        await asyncio.sleep(0.002)  # a paced load: three servers share two cores with it


class Nemesis:
    """Random faults on the cluster, one at a time."""

    def __init__(self, cluster: Cluster, cfg: Config, history: History, rnd: random.Random):
        self.cluster = cluster
        self.cfg = cfg
        self.history = history
        self.rnd = rnd
        self.logs: dict[str, list[str]] = collections.defaultdict(list)
        self.kinds: collections.Counter[str] = collections.Counter()

    async def restart(self, *names: str) -> None:
        for name in names:  # the log of the life that ends
            self.logs[name].extend(self.cluster.servers[name].log)
        await asyncio.gather(*(asyncio.to_thread(self.cluster.restart, n) for n in names))

    async def leader(self, admin: angzarr_es.Client) -> str:
        try:
            found = await asyncio.wait_for(
                self.cluster.stream_leader(admin, self.cfg.nats.stream_name), 1.0
            )
        except (AngzarrESError, TimeoutError):
            found = None
        return found or self.rnd.choice(sorted(self.cluster.servers))

    async def run(self, admin: angzarr_es.Client, until_: float) -> None:
        names = sorted(self.cluster.servers)
        loop = asyncio.get_running_loop()
        while loop.time() < until_:
            await asyncio.sleep(self.rnd.uniform(2, 5))  # the nemesis' pacing
            kind = self.rnd.choice(["kill", "stop", "leader-kill", "quorum"])
            hold = self.rnd.uniform(1, 6)
            began = time.monotonic()
            if kind == "kill":
                victims = [self.rnd.choice(names)]
            elif kind == "leader-kill":
                victims = [await self.leader(admin)]
            elif kind == "quorum":
                victims = self.rnd.sample(names, 2)
            else:
                victims = [self.rnd.choice(names)]
            self.kinds[kind] += 1
            if kind == "stop":
                self.cluster.pause(victims[0])
                await asyncio.sleep(hold)
                self.cluster.resume(victims[0])
            else:
                for v in victims:
                    await asyncio.to_thread(self.cluster.kill, v)
                await asyncio.sleep(hold)
                await self.restart(*victims)
            self.history.nemesis.append((began, time.monotonic(), f"{kind} {','.join(victims)}"))


def outages(history: History, start: float, end: float) -> list[tuple[float, float, str]]:
    """Stretches over OUTAGE s without an acknowledged append: (from, length, faults then)."""
    acks = sorted(c.ended for c in history.commands if c.outcome == "stored")
    marks = [start, *acks, end]
    found = []
    for a, b in itertools.pairwise(marks):
        if b - a > OUTAGE:
            # The faults under way when it began, or begun during it.
            faults = [what for s, e, what in history.nemesis if s < b and e > a - 1]
            found.append((a - start, b - a, "; ".join(faults)))
    return sorted(found, key=lambda o: -o[1])


def commits(history: History) -> set[tuple[str, int]]:
    """(root, first sequence) of every commit stored: each command is one
    event, so one commit per event."""
    return {(root, seq) for root, tags in history.stored.items() for seq in range(len(tags))}


def check(history: History) -> list[str]:
    """Every property of the history; what does not hold."""
    bad = [f"an error not of the project's types: {e}" for e in history.foreign[:5]]
    where: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    for root, tags in history.stored.items():
        for seq, tag in enumerate(tags):
            where[tag].append((root, seq))
    bad += [f"{tag} stored {len(at)} times: {at}" for tag, at in where.items() if len(at) > 1]
    mine = {c.tag: c for c in history.commands}
    bad += [f"{tag} stored but never sent: {at}" for tag, at in where.items() if tag not in mine]
    slots = collections.Counter(
        (c.root, c.first) for c in history.commands if c.outcome == "stored"
    )
    bad += [f"two acknowledged appends at {slot}" for slot, n in slots.items() if n > 1]
    for c in history.commands:
        at = where.get(c.tag, [])
        if c.outcome == "stored" and at != [(c.root, c.first)]:
            bad.append(f"acknowledged {c} is stored at {at}")
        elif c.outcome == "refused" and at:
            bad.append(f"refused {c} is stored at {at}")
        elif c.outcome == "unknown" and len(at) > 1:
            bad.append(f"unknown {c} is stored {len(at)} times")
    # The projector: every commit handled, first deliveries in order.
    handled = {(root, first) for root, first, _, _ in history.deliveries}
    missing = sorted(commits(history) - handled)
    if missing:
        bad.append(f"the projector never handled {len(missing)} commits: {missing[:5]}")
    seen: dict[str, int] = {}
    done: set[tuple[str, int]] = set()
    for root, first, _, count in history.deliveries:
        if (root, first) in done:
            continue
        done.add((root, first))
        if count == 1 and first < seen.get(root, -1):
            bad.append(f"{root}: commit at {first} first handled after {seen[root]}")
        seen[root] = max(seen.get(root, -1), first)
    return bad


async def test_a_nemesis_against_writers_and_a_projector(cluster: Cluster, r3: Config) -> None:
    print(f"\nnemesis seed {SEED} (ANGZARR_CHAOS_SEED={SEED} replays it), {SECONDS:.0f}s")
    rnd = random.Random(SEED)
    history = History(SEED)
    # The projector's API requests may wait out an election (see test_cluster.py).
    patient = config_of(msgspec.structs.replace(r3.nats, request_timeout=5.0))
    clients = [await angzarr_es.connect(config=r3) for _ in range(2)]
    admin = await angzarr_es.connect(config=patient)
    reader = await angzarr_es.connect(config=patient)
    nemesis = Nemesis(cluster, r3, history, rnd)

    async def handle(d: angzarr_es.Delivery) -> None:
        history.deliveries.append(
            (d.root, d.events[0].sequence, d.events[-1].sequence + 1, d.delivery_count)
        )

    projector = reader.projector(
        "nemesis",
        filters.domain("player"),
        handle,
        concurrency=4,
        ack_wait=2.0,
        max_deliver=1000,
        backoff=(0.1,),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    drain = [float("inf")]
    failure = ""
    began = time.monotonic()
    try:
        async with projector:
            names = [f"o{k}" for k in range(3)] + [f"s{k}" for k in range(3)]
            tasks = [
                asyncio.create_task(
                    writer(
                        clients[k % 2].store("player"),
                        name,
                        history,
                        stop,
                        drain,
                        random.Random(rnd.random()),
                    )
                )
                for k, name in enumerate(names)
            ]
            await nemesis.run(admin, loop.time() + SECONDS)
            ended = time.monotonic()
            # Heal, then let every command in flight find out what happened.
            await asyncio.to_thread(cluster.ensure_running)
            await cluster.wait_for_leader(admin, r3.nats.stream_name, current=True, timeout=60)
            stop.set()
            drain[0] = time.monotonic() + 30
            await asyncio.gather(*tasks)
            for root in [f"own-{n}" for n in names if n.startswith("o")] + SHARED:
                hist = await eventually(
                    lambda r=root: _leader_load(clients[0].store("player"), r),  # type: ignore[misc]
                    timeout=30,
                    what=f"load {root}",
                )
                seqs = [e.sequence for e in hist.events]
                if seqs != list(range(len(seqs))):
                    failure += f"\n{root}: not dense: {seqs[:20]}"
                history.stored[root] = [e.event.reason for e in hist.events]  # type: ignore[attr-defined]
            total = sum(len(t) for t in history.stored.values())

            async def caught_up() -> bool | None:
                handled = {(r, f) for r, f, _, _ in history.deliveries}
                return await until(all(c in handled for c in commits(history)))

            try:
                await eventually(caught_up, timeout=60, what="the projector to catch up")
            except AssertionError as exc:
                failure += f"\n{exc}"
            dead = projector.stats.dead_lettered
        await projector.delete()
    finally:
        stop.set()
        drain[0] = 0.0
        for c in (*clients, admin, reader):
            await c.close()
    bad = check(history)
    if dead:
        bad.append(f"{dead} commits dead-lettered")
    if failure:
        bad.append(failure)
    outcomes = collections.Counter(c.outcome for c in history.commands)
    errors = collections.Counter(e for c in history.commands for e in c.errors)
    gaps = outages(history, began, ended)
    redelivered = sum(1 for *_, n in history.deliveries if n > 1)
    print(
        f"nemesis seed {SEED}: {SECONDS:.0f}s, faults {dict(nemesis.kinds)}; "
        f"{outcomes['stored']} appends acknowledged ({total} events stored), "
        f"{outcomes['refused']} refused, {outcomes['unknown']} unknown at the end; "
        f"errors met {dict(errors)}; {len(gaps)} write outages over {OUTAGE:g}s, longest "
        + ", ".join(f"{length:.1f}s at {at:.0f}s ({what})" for at, length, what in gaps[:4])
        + f"; projector: {len(history.deliveries)} deliveries, {redelivered} redelivered; "
        f"{len(bad)} violations"
    )
    if bad:
        saved = history.save(cluster, nemesis.logs)
        raise AssertionError(
            f"nemesis seed {SEED}: {len(bad)} violations (history and server logs in "
            f"{saved}):\n" + "\n".join(bad[:20])
        )


def test_the_history_check_finds_each_violation() -> None:
    """The checker itself: a history with one of each violation is refused
    on each count, and a failure's history and logs are saved."""
    h = History(seed=1)

    def cmd(tag: str, root: str, outcome: str, first: int = -1) -> Command:
        c = Command(tag.split(":")[0], root, tag, 0, 0.0, outcome, first, first + 1)
        h.commands.append(c)
        return c

    cmd("a:1", "r", "stored", 0)
    cmd("a:2", "r", "stored", 1)  # stored at 2: not at its sequence
    cmd("b:1", "r", "stored", 1)  # a second acknowledged append in slot r[1]
    cmd("c:1", "r", "refused")  # refused, yet stored
    cmd("d:1", "r", "unknown")  # unknown, stored twice
    h.stored = {"r": ["a:1", "b:1", "a:2", "c:1", "d:1", "d:1", "x:9"]}
    h.deliveries = [("r", 0, 1, 1), ("r", 2, 3, 1), ("r", 1, 2, 1)]  # 1 after 2, first delivery
    h.foreign.append("a:3: KeyError('boom')")
    found = "\n".join(check(h))
    for expected in (
        "not of the project's types",
        "d:1 stored 2 times",
        "x:9 stored but never sent",
        "two acknowledged appends at ('r', 1)",
        "acknowledged a:2 on r at expected 0: stored at 1",
        "refused c:1 on r",
        "unknown d:1 on r",
        "the projector never handled",
        "r: commit at 1 first handled after 2",
    ):
        assert expected in found, (expected, found)
    cluster = Cluster(3)
    try:
        saved = h.save(cluster, {"n1": ["an earlier life"]})
    finally:
        cluster.cleanup()
    try:
        assert json.loads((saved / "history.json").read_text())["seed"] == 1
        assert (saved / "n1.log").read_text().startswith("an earlier life")
    finally:
        shutil.rmtree(saved)
