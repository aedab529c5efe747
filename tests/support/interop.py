"""One scenario of angzarr_es beside angzarr's bus (`angzarr_bus`), in the
per-domain layout, for one server and the cluster alike.

`order` says who starts first: "angzarr" (its bus publishes and its consumer
starts, creating `<PREFIX>_<DOMAIN>` as it does, then angzarr_es provisions
and adopts the stream) or "angzarr_es" (it provisions the domain's stream,
then angzarr's get-or-create finds it). Then both write to one aggregate in
turn, angzarr_es to aggregates of its own, and the scenario checks:

- nothing failed with 10065 (any failure fails the scenario);
- angzarr's consumer received every commit, angzarr_es's included, and
  decoded each (16-byte root, dense pages);
- angzarr_es loads angzarr's books, appends after them with the server's
  check, and its projector receives every commit;
- nothing is lost: the stream holds exactly the commits written;
- the domain's stream has the store's settings (`allow_direct`, the
  configured replicas), whoever made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from nats.aio.msg import Msg

import angzarr_es
from angzarr_es import filters
from angzarr_es.config import Config
from angzarr_es.pb import core_pb2, player_pb2
from tests.support import jsadmin
from tests.support.angzarr_bus import HEADER_CORRELATION, AngzarrBus, book
from tests.support.angzarr_otel import Trace
from tests.support.configs import with_nats

DOMAIN = "player"
WAIT = 30.0


def deposit(cents: int) -> player_pb2.FundsDeposited:
    return player_pb2.FundsDeposited(amount_cents=cents, currency="EUR")


class Seen:
    """What angzarr's consumer decoded: (root, first page, page count) per commit."""

    def __init__(self) -> None:
        self.commits: list[tuple[uuid.UUID, int, int]] = []
        self.correlation: dict[tuple[uuid.UUID, int], str] = {}  # Angzarr-Correlation headers
        self.changed = asyncio.Event()

    async def __call__(self, event_book: core_pb2.EventBook, msg: Msg) -> bool:
        root = uuid.UUID(bytes=event_book.cover.root.value)  # angzarr's Uuid::from_slice
        pages = event_book.pages
        first = pages[0].header.sequence
        assert [p.header.sequence for p in pages] == list(range(first, first + len(pages)))
        self.commits.append((root, first, len(pages)))
        if msg.headers and HEADER_CORRELATION in msg.headers:
            self.correlation[root, first] = msg.headers[HEADER_CORRELATION]
        self.changed.set()
        return True

    async def wait_count(self, n: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.commits) < n:
                self.changed.clear()
                await self.changed.wait()


async def both_ways(
    cfg: Config, order: str, provision: Callable[[angzarr_es.Client], Awaitable[object]]
) -> None:
    """Run the scenario; `provision` provisions a client for `DOMAIN`."""
    prefix = cfg.nats.subject_prefix
    shared = uuid.uuid4()
    ours = [uuid.uuid4(), uuid.uuid4()]
    seen = Seen()
    async with await AngzarrBus.connect(cfg.nats.servers, prefix) as angzarr:
        stream = angzarr.stream_name(DOMAIN)
        try:
            if order == "angzarr":
                await angzarr.publish(book(DOMAIN, shared, 0, [deposit(1), deposit(2)]))
                consumer = await angzarr.consumer("angzarr-projector", DOMAIN, seen)
            async with await angzarr_es.connect(config=cfg) as client:
                await provision(client)
                if order != "angzarr":
                    consumer = await angzarr.consumer("angzarr-projector", DOMAIN, seen)
                    await angzarr.publish(book(DOMAIN, shared, 0, [deposit(1), deposit(2)]))
                async with consumer:
                    await _exchange(client, angzarr, shared, ours, seen, stream)
        finally:
            await angzarr.delete_created()


async def _exchange(
    client: angzarr_es.Client,
    angzarr: AngzarrBus,
    shared: uuid.UUID,
    ours: list[uuid.UUID],
    seen: Seen,
    stream: str,
) -> None:
    store = client.store(DOMAIN)
    history = await store.load(shared)
    assert [e.event.amount_cents for e in history.events] == [1, 2]  # type: ignore[attr-defined]
    done = await store.append(shared, [deposit(3)], expected=history.next_sequence)
    assert done.first_sequence == 2
    # angzarr's coordinator, which knows the aggregate's next sequence, writes again.
    await angzarr.publish(book(DOMAIN, shared, 3, [deposit(4)], correlation_id="wf"))
    await store.append(shared, [deposit(5)], expected=4)
    for root in ours:
        await store.append(root, [deposit(10), deposit(11)], expected=0, correlation_id="wf")
    commits = 6  # angzarr: 2 on the shared aggregate; angzarr_es: 2 there, 1 on each own
    await seen.wait_count(commits)
    assert sorted((str(r), f, n) for r, f, n in seen.commits) == sorted(
        [(str(shared), 0, 2), (str(shared), 2, 1), (str(shared), 3, 1), (str(shared), 4, 1)]
        + [(str(root), 0, 2) for root in ours]
    )
    # angzarr's consumer sees the correlation id where angzarr puts it.
    assert seen.correlation == {(shared, 3): "wf", **{(root, 0): "wf" for root in ours}}
    history = await store.load(shared)
    assert [e.sequence for e in history.events] == [0, 1, 2, 3, 4]
    handled: list[str] = []

    async def project(d: angzarr_es.Delivery) -> None:
        handled.append(d.root)

    async with client.projector("python-projector", filters.domain(DOMAIN), project) as p:
        await p.wait(lambda s: s.handled == commits, timeout=WAIT)
    assert sorted(handled) == sorted([str(shared)] * 4 + [str(r) for r in ours])
    info = await jsadmin.stream_info_json(client, stream)
    assert info["state"]["messages"] == commits
    # Adopted or made by angzarr_es: the store's settings, angzarr's name and subjects.
    assert info["config"]["allow_direct"] is True
    assert info["config"]["num_replicas"] == client.config.nats.replicas
    assert info["config"]["subjects"] == [f"{client.config.nats.subject_prefix}.events.{DOMAIN}.>"]


@contextlib.asynccontextmanager
async def beside_angzarr(config: Config) -> AsyncIterator[tuple[angzarr_es.Client, AngzarrBus]]:
    """A client in the per-domain layout with `DOMAIN` provisioned, and
    angzarr's bus on the same server and prefix; their streams deleted after."""
    cfg = with_nats(config, stream_layout="per-domain")
    async with (
        await AngzarrBus.connect(cfg.nats.servers, cfg.nats.subject_prefix) as angzarr,
        await angzarr_es.connect(config=cfg) as client,
    ):
        await client.provision(domains=[DOMAIN])
        try:
            yield client, angzarr
        finally:
            await angzarr.delete_created()
            await jsadmin.delete_layout_streams(client, cfg)


async def consume_parents(angzarr: AngzarrBus, count: int) -> list[tuple[str, Trace | None]]:
    """Run angzarr's consumer on `DOMAIN` until it has decoded `count` commits:
    (subject, the parent of its `bus.consume` span) for each."""

    handled = 0
    done = asyncio.Event()

    async def handle(event_book: core_pb2.EventBook, msg: Msg) -> bool:
        nonlocal handled
        handled += 1  # dispatched after its parent was extracted
        if handled == count:
            done.set()
        return True

    async with await angzarr.consumer("angzarr-traced", DOMAIN, handle) as consumer:
        await asyncio.wait_for(done.wait(), WAIT)
    return consumer.parents
