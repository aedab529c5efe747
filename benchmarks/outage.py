"""How long writes stop, by fault kind, on a three-server cluster: the server's
election and the client's time to notice and resume, measured apart.

    python -m benchmarks.outage [--faults follower-kill,leader-kill,leader-stop,quorum]
        [--trials 3] [--writers 6] [--pause 10] [--down 5] [--request-timeout 2]
        [--verbose] [--json out.json]

Needs the checkout (it starts its servers with tests/support/cluster.py) and
the nats-server binary (the `server` extra). Each trial gets a fresh R3 stream
and `--writers` writers spread over three clients, each connected to its own
server first. A writer appends one commit at a time to its own aggregate with
an idempotency key, the way an application retries: the same call again after
StoreTimeout (the outcome is unknown), again 10 ms after StoreUnavailable
(nothing stored). Then one fault:

    follower-kill   kill -9 a server that does not lead the stream
    leader-kill     kill -9 the stream's leader
    leader-stop     SIGSTOP the stream's leader for --pause s, then SIGCONT
    quorum          kill -9 the leader and a follower; restart both after --down s

and, per writer, from the fault (for `quorum`, from the restart):

    leader   when a server logged "new stream leader" for the stream: the
             server's election (0 when the leader did not change)
    resume   when the writer's first append after the fault returned
    client   resume - leader: the client's share (reconnecting, a request
             waiting out its timeout, retry pauses)

Writers are split by where they were connected when the fault hit: "on the
faulted server" (it was killed, or frozen) or "elsewhere". Every trial ends
with a ledger check (every acknowledged append stored once, in its slot).
Results: docs/reliability.md, "How long writes stop".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import platform
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata

import msgspec

import angzarr_es
from angzarr_es.config import Config
from angzarr_es.embedded import find_nats_server
from angzarr_es.errors import AngzarrESError, StoreTimeout
from tests.support.cluster import Cluster, eventually, r3_stream
from tests.support.loadgen import Ledger, check_ledger, config_of, tagged, until

FAULTS = ("follower-kill", "leader-kill", "leader-stop", "quorum")
# "[pid] 2026/12/07 04:08:06.594634 [INF] JetStream cluster new stream leader for '$G > s'"
_NEW_LEADER = re.compile(
    r"^\[\d+\] (\S+ \S+) \[INF\] JetStream cluster new stream leader for '[^>]*> (.+)'$"
)


@dataclass
class Writer:
    """One writer's appends: (start, end, outcome) in wall-clock seconds."""

    name: str
    server: str
    log: list[tuple[float, float, str]] = field(default_factory=list)

    def resume(self, after: float) -> float | None:
        """When the first append after `after` returned: one sent after it, or
        one that waited through it (not an ack already on its way)."""
        return next(
            (
                end
                for start, end, what in self.log
                if what == "ok" and (start > after or end > after + 0.1)
            ),
            None,
        )


@dataclass
class Trial:
    fault: str
    faulted: str
    fault_at: float
    leader_at: float
    writers: list[Writer]
    acked: int

    def rows(self) -> list[tuple[str, bool, float, float]]:
        """(writer, on the faulted server, resume, client share) from the fault."""
        out = []
        for w in self.writers:
            resumed = w.resume(self.fault_at)
            if resumed is None:
                continue
            out.append(
                (
                    w.name,
                    w.server == self.faulted,
                    resumed - self.fault_at,
                    resumed - self.leader_at,
                )
            )
        return out


def leader_logged(cluster: Cluster, stream: str, after: float) -> float | None:
    """When a server first logged a new leader of `stream` after `after` (wall clock)."""
    times = []
    for server in cluster.servers.values():
        for line in list(server.log):
            found = _NEW_LEADER.match(line)
            if found and found.group(2) == stream:
                at = dt.datetime.strptime(found.group(1), "%Y/%m/%d %H:%M:%S.%f").timestamp()
                if at > after:
                    times.append(at)
    return min(times, default=None)


async def write(
    store: angzarr_es.EventStore, w: Writer, ledger: Ledger, stop: asyncio.Event
) -> None:
    root = f"out-{w.name}"
    nxt = i = 0
    while not stop.is_set():
        i += 1
        tag = f"{w.name}:{i}"
        while True:  # one command, retried until it is known stored
            started = time.time()
            try:
                res = await store.append(root, [tagged(tag)], expected=nxt, idempotency_key=tag)
            except AngzarrESError as exc:
                w.log.append((started, time.time(), f"{type(exc).__name__}: {exc}"))
                if not isinstance(exc, StoreTimeout):
                    await asyncio.sleep(0.01)
                continue
            w.log.append((started, time.time(), "ok"))
            break
        ledger.acked.append((root, res.first_sequence, [tag]))
        nxt = res.next_sequence
        await asyncio.sleep(0.005)  # a paced load: the servers share two cores with it


def pinned(cfg: Config, cluster: Cluster, server: str, timeout: float) -> Config:
    nats = msgspec.structs.replace(cfg.nats, url=cluster.url_of(server), request_timeout=timeout)
    return config_of(nats)


async def trial(cluster: Cluster, fault: str, args: argparse.Namespace) -> Trial:
    async with r3_stream(cluster) as cfg:
        stream = cfg.nats.stream_name
        names = sorted(cluster.servers)
        clients = [
            await angzarr_es.connect(config=pinned(cfg, cluster, n, args.request_timeout))
            for n in names
        ]
        async with await angzarr_es.connect(config=cfg) as admin:
            leader = await cluster.wait_for_leader(admin, stream, current=True)
        ledger, stop = Ledger(), asyncio.Event()
        writers = [Writer(f"w{k}", names[k % 3]) for k in range(args.writers)]
        tasks = [
            asyncio.create_task(write(clients[k % 3].store("player"), w, ledger, stop))
            for k, w in enumerate(writers)
        ]
        try:
            await eventually(
                lambda: until(len(ledger.acked) >= 20 * args.writers), timeout=60, what="warm-up"
            )
            # nats-py waits reconnect_time_wait (0.25 s) before going back to
            # a server it connected to less than that long ago: long-lived
            # clients, as applications have.
            await asyncio.sleep(1.0)
            follower = next(n for n in names if n != leader)
            faulted = follower if fault == "follower-kill" else leader
            fault_at = time.time()
            if fault in ("follower-kill", "leader-kill"):
                await asyncio.to_thread(cluster.kill, faulted)
            elif fault == "leader-stop":
                cluster.pause(faulted)
            else:
                await asyncio.to_thread(cluster.kill, faulted)
                await asyncio.to_thread(cluster.kill, follower)
                await asyncio.sleep(args.down)  # the outage's length is the experiment
                fault_at = time.time()
                await asyncio.gather(
                    asyncio.to_thread(cluster.restart, faulted),
                    asyncio.to_thread(cluster.restart, follower),
                )
            if fault == "leader-stop":
                await asyncio.sleep(args.pause)  # the pause's length is the experiment
                cluster.resume(faulted)
            with contextlib.suppress(AssertionError):  # reported: a writer without `resume`
                await eventually(
                    lambda: until(all(w.resume(fault_at) is not None for w in writers)),
                    timeout=60,
                    what="every writer to append again",
                )
            leader_at = (
                fault_at
                if fault == "follower-kill"
                else leader_logged(cluster, stream, fault_at) or float("nan")
            )
            cluster.ensure_running()
            stop.set()
            await asyncio.gather(*tasks)
        finally:
            stop.set()
            for c in clients:
                await c.close()
        await check_ledger(cfg, ledger, {f"out-{w.name}" for w in writers})
        return Trial(fault, faulted, fault_at, leader_at, writers, len(ledger.acked))


def spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):5.2f} / {max(values):5.2f}"


def report(trials: list[Trial], args: argparse.Namespace) -> None:
    print(
        "\n| fault | trials | election (server) p50 / max s | writers on the faulted "
        "server: resume / client share, p50 / max s | other writers: resume / client "
        "share, p50 / max s |"
    )
    print("|---|---|---|---|---|")
    for fault in args.faults:
        mine = [t for t in trials if t.fault == fault]
        if not mine:
            continue
        rows = [r for t in mine for r in t.rows()]
        on = [r for r in rows if r[1]]
        off = [r for r in rows if not r[1]]
        election = [t.leader_at - t.fault_at for t in mine]
        print(
            f"| {fault} | {len(mine)} | {spread(election)} | "
            f"{spread([r[2] for r in on])} / {spread([r[3] for r in on])} | "
            f"{spread([r[2] for r in off])} / {spread([r[3] for r in off])} |"
        )


def explain(t: Trial) -> None:
    """The slowest writer's appends from the fault until it resumed."""
    rows = t.rows()
    if not rows:
        return
    slow = max(rows, key=lambda r: r[3])
    w = next(w for w in t.writers if w.name == slow[0])
    print(f"  slowest: {w.name} on {w.server} (faulted {t.faulted}); from the fault:")
    shown = [
        (start - t.fault_at, end - t.fault_at, what.split(": ", 1)[-1][:140])
        for start, end, what in w.log
        if end > t.fault_at - 0.5 and start < t.fault_at + slow[2] + 0.01
    ]
    i = 0
    while i < len(shown):  # a run of the same answer on one line
        j = i
        while j + 1 < len(shown) and shown[j + 1][2] == shown[i][2]:
            j += 1
        times = f"{shown[i][0]:7.3f} -> {shown[j][1]:7.3f}"
        print(f"    {times}  {shown[i][2]}" + (f"  (x{j - i + 1})" if j > i else ""))
        i = j + 1


def machine() -> str:
    version = find_nats_server()
    return (
        f"{platform.machine()} {platform.system()}, {platform.python_version()}, "
        f"nats-py {metadata.version('nats-py')}, angzarr-es {metadata.version('angzarr-es')}, "
        f"nats-server at {version}"
    )


async def main(args: argparse.Namespace) -> list[Trial]:
    trials: list[Trial] = []
    print(f"# write outage by fault kind: {machine()}")
    print(f"# {args.writers} writers, request_timeout {args.request_timeout}s, {sys.argv[1:]}")
    with Cluster(3) as cluster:
        for fault in args.faults:
            for n in range(args.trials):
                t = await trial(cluster, fault, args)
                trials.append(t)
                rows = t.rows()
                print(
                    f"{fault} #{n + 1}: faulted {t.faulted}; leader after "
                    f"{t.leader_at - t.fault_at:.2f}s; resume "
                    + ", ".join(f"{name}{'*' if on else ''} {r:.2f}" for name, on, r, _ in rows)
                    + f" (s; * on the faulted server); {t.acked} acked",
                    flush=True,
                )
                if args.verbose:
                    explain(t)
    report(trials, args)
    return trials


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.outage", description=__doc__)
    parser.add_argument("--faults", default=",".join(FAULTS), type=lambda s: s.split(","))
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--writers", type=int, default=6)
    parser.add_argument("--pause", type=float, default=10.0, help="leader-stop: seconds stopped")
    parser.add_argument("--down", type=float, default=5.0, help="quorum: seconds two are down")
    parser.add_argument("--request-timeout", type=float, default=2.0)
    parser.add_argument("--verbose", action="store_true", help="the slowest writer's timeline")
    parser.add_argument("--json", help="write every trial's per-writer figures here")
    args = parser.parse_args(argv)
    unknown = set(args.faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown fault(s) {sorted(unknown)}; known: {', '.join(FAULTS)}")
    return args


def run(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    trials = asyncio.run(main(args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{**asdict(t), "writers": [asdict(w) for w in t.writers]} for t in trials], f)
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
