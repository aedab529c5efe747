"""Load generators and checks shared by the fault-injection tests.

Writers record what the store told them (acknowledged appends, typed errors);
`check_ledger` reads everything back and checks the store's promises.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import msgspec

import angzarr_es
from angzarr_es import ConcurrencyError, History, StoreTimeout, StoreUnavailable
from angzarr_es.config import Config
from angzarr_es.pb import player_pb2
from angzarr_es.testing import faults
from angzarr_es.testing.faults import Forward, Reply, Request
from tests.support.cluster import eventually

TYPED = (StoreUnavailable, StoreTimeout, ConcurrencyError)


def tagged(tag: str) -> player_pb2.FundsWithdrawn:
    return player_pb2.FundsWithdrawn(amount_cents=1, currency="EUR", reason=tag)


@dataclass
class Ledger:
    """What writers were told: acknowledged appends, and every error by type."""

    acked: list[tuple[str, int, list[str]]] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    ok_at: list[tuple[float, float]] = field(default_factory=list)
    """(start, end) monotonic time of every acknowledged append."""
    sample: dict[str, str] = field(default_factory=dict)
    by_writer: collections.Counter[str] = field(default_factory=collections.Counter)
    histories: dict[str, list[str]] = field(default_factory=dict)
    """Filled by check_ledger: every aggregate's event tags as stored."""

    def failed(self, exc: Exception) -> None:
        name = type(exc).__name__
        self.errors[name] += 1
        self.sample.setdefault(name, str(exc))


async def backoff() -> None:
    """A caller's retry pause after StoreUnavailable (no leader yet): without it
    the writers would spin on instant "no responders" answers during the election."""
    await asyncio.sleep(0.01)


async def own_writer(
    store: angzarr_es.EventStore, name: str, ledger: Ledger, stop: asyncio.Event
) -> None:
    """Append 1-2 events at a time to this writer's own aggregate."""
    root = f"own-{name}"
    nxt: int | None = 0
    i = 0
    while not stop.is_set():
        i += 1
        tags = [f"{name}:{i}:{j}" for j in range(1 + i % 2)]
        started = time.monotonic()
        try:
            if nxt is None:
                nxt = await store.next_sequence(root)
            res = await store.append(root, [tagged(t) for t in tags], expected=nxt)
        except ConcurrencyError as exc:
            # Only possible if an append that raised did land: resync.
            ledger.failed(exc)
            nxt = exc.actual
            continue
        except (StoreUnavailable, StoreTimeout) as exc:
            ledger.failed(exc)
            nxt = None
            await backoff()
            continue
        ledger.acked.append((root, res.first_sequence, tags))
        ledger.ok_at.append((started, time.monotonic()))
        ledger.by_writer[name] += 1
        nxt = res.next_sequence


async def shared_writer(
    store: angzarr_es.EventStore,
    name: str,
    roots: list[str],
    ledger: Ledger,
    stop: asyncio.Event,
    seed: int,
) -> None:
    """Read-then-append on aggregates other writers also write: real conflicts."""
    rnd = random.Random(seed)
    i = 0
    while not stop.is_set():
        i += 1
        root = rnd.choice(roots)
        tags = [f"{name}:{i}"]
        started = time.monotonic()
        try:
            nxt = await store.next_sequence(root)
            res = await store.append(root, [tagged(t) for t in tags], expected=nxt)
        except TYPED as exc:
            ledger.failed(exc)
            if not isinstance(exc, ConcurrencyError):
                await backoff()
            continue
        ledger.acked.append((root, res.first_sequence, tags))
        ledger.ok_at.append((started, time.monotonic()))
        ledger.by_writer[name] += 1


async def check_ledger(cfg: Config, ledger: Ledger, roots: set[str]) -> int:
    """Every acked append present exactly once, in order; histories dense. Returns events."""
    total = 0
    async with await angzarr_es.connect(config=cfg) as c:
        store = c.store("player")
        histories: dict[str, list[str]] = {}
        for root in roots:
            hist = await eventually(
                lambda r=root: _leader_load(store, r),  # type: ignore[misc]
                timeout=30,
                what=f"load {root}",
            )
            assert [e.sequence for e in hist.events] == list(range(len(hist.events))), root
            assert hist.next_sequence == len(hist.events)
            tags = [e.event.reason for e in hist.events]  # type: ignore[attr-defined]
            dupes = [t for t, n in collections.Counter(tags).items() if n > 1]
            assert not dupes, f"{root}: events stored twice: {dupes[:5]}"
            histories[root] = tags
            total += len(tags)
    slots = collections.Counter((root, first) for root, first, _ in ledger.acked)
    assert max(slots.values(), default=1) == 1, "two writers were told they won one sequence"
    for root, first, tags in ledger.acked:
        got = histories[root][first : first + len(tags)]
        assert got == tags, f"acked append {tags} at {root}[{first}] reads back as {got}"
    ledger.histories = histories
    return total


class PublishSpy:
    """Counts what the store sent: attempts per Nats-Msg-Id, duplicate acks,
    error codes. Installed on `client` (through `angzarr_es.testing.faults`)
    unless `install` is False, for a test that calls `observe` from its own
    interception."""

    def __init__(self, client: angzarr_es.Client, *, install: bool = True) -> None:
        self.ids: collections.Counter[str] = collections.Counter()
        self.duplicates = 0
        self.codes: collections.Counter[int] = collections.Counter()
        self.trail: list[str] = []  # per ack: "ok", "dup" or the err_code
        if install:
            self._installed = ExitStack()
            self._installed.enter_context(faults.intercept(client, on_request=self.observe))

    async def observe(self, request: Request, forward: Forward) -> Reply:
        """Send `request`, noting a publish's id and what its ack said."""
        msg_id = (request.headers or {}).get("Nats-Msg-Id")
        if msg_id is None:
            return await forward(request)
        self.ids[msg_id] += 1
        reply = await forward(request)
        ack = msgspec.json.decode(reply.data) if reply.data else {}
        error = ack.get("error")
        if ack.get("duplicate"):
            self.duplicates += 1
        if error is not None:
            self.codes[error["err_code"]] += 1
        self.trail.append(
            "dup" if ack.get("duplicate") else str(error["err_code"]) if error else "ok"
        )
        return reply

    @property
    def retried(self) -> int:
        return sum(1 for n in self.ids.values() if n > 1)


async def _leader_load(store: angzarr_es.EventStore, root: str) -> History:
    """A load no replica's lag can shorten: learn the aggregate's last commit
    from the stream leader first, so the store reads any missing tail there."""
    await store.next_sequence(root, leader=True)
    return await store.load(root)


async def until(cond: bool) -> bool | None:
    """Adapter for `eventually` on a plain condition."""
    return True if cond else None


def config_of(nats: Any) -> Config:
    """A Config around one NatsConfig."""
    return Config(bus=msgspec.structs.replace(Config().bus, nats=nats))
