"""One scenario of angzarr_es beside angzarr's bus (`angzarr_bus`), in the
per-domain layout, for one server and the cluster alike.

`order` says who starts first: "angzarr" (its bus publishes and its consumer
starts, creating `<PREFIX>_<DOMAIN>` as it does, then angzarr_es provisions
and adopts the stream) or "angzarr_es" (it provisions the domain's stream,
then angzarr's get-or-create finds it). Then both write to one aggregate in
turn, angzarr_es to aggregates of its own, and the scenario checks:

- nothing failed with 10065 (any failure fails the scenario);
- angzarr's consumer received every commit, angzarr_es's included, and
  decoded each (16-byte root, dense pages, each event under the exact type
  URL angzarr's Python client looks for);
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
from tests.support.angzarr_bus import (
    HEADER_CORRELATION,
    NO_RESPONDERS,
    TYPE_PREFIX,
    AngzarrBus,
    AngzarrBusError,
    book,
)
from tests.support.angzarr_otel import Trace
from tests.support.configs import with_nats

DOMAIN = "player"
WAIT = 30.0


def deposit(cents: int) -> player_pb2.FundsDeposited:
    return player_pb2.FundsDeposited(amount_cents=cents, currency="EUR")


DEPOSIT_URL = TYPE_PREFIX + player_pb2.FundsDeposited.DESCRIPTOR.full_name


class Seen:
    """What angzarr's consumer decoded: (root, first page, amounts) per commit.

    Each event is unpacked the way angzarr-client 0.3.1 does it: only under
    the exact type URL `type.googleapis.com/<full name>`."""

    def __init__(self) -> None:
        self.commits: list[tuple[uuid.UUID, int, list[int]]] = []
        self.correlation: dict[tuple[uuid.UUID, int], str] = {}  # Angzarr-Correlation headers
        self.failures: list[Exception] = []  # what a handler raised (its message was NAKed)
        self.changed = asyncio.Event()

    async def __call__(self, event_book: core_pb2.EventBook, msg: Msg) -> bool:
        try:
            self._decode(event_book, msg)
        except Exception as exc:
            self.failures.append(exc)
            raise
        finally:
            self.changed.set()
        return True

    def _decode(self, event_book: core_pb2.EventBook, msg: Msg) -> None:
        root = uuid.UUID(bytes=event_book.cover.root.value)  # angzarr's Uuid::from_slice
        pages = event_book.pages
        first = pages[0].header.sequence
        sequences = [p.header.sequence for p in pages]
        assert sequences == list(range(first, first + len(pages))), f"pages {sequences}"
        urls = [p.event.type_url for p in pages]
        assert urls == [DEPOSIT_URL] * len(pages), f"type URLs {urls}"
        cents = [player_pb2.FundsDeposited.FromString(p.event.value).amount_cents for p in pages]
        self.commits.append((root, first, cents))
        if msg.headers and HEADER_CORRELATION in msg.headers:
            self.correlation[root, first] = msg.headers[HEADER_CORRELATION]

    async def wait_count(self, n: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.commits) < n:
                if self.failures:
                    raise self.failures[0]
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
                await _first_publish(angzarr, book(DOMAIN, shared, 0, [deposit(1), deposit(2)]))
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


async def _first_publish(angzarr: AngzarrBus, made: core_pb2.EventBook) -> None:
    """angzarr's first publish, which creates the domain's stream. On a
    cluster the new stream may not answer from every server at once, and
    angzarr's publish then fails ("no stream found for given subject"): its
    caller tries again, and so does this (nothing was stored)."""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                await angzarr.publish(made)
                return
            except AngzarrBusError as exc:
                if exc.err_code != NO_RESPONDERS:
                    raise
            # Polling interval, not a wait for an event: the publish is tried again.
            await asyncio.sleep(0.05)


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
    assert sorted((str(r), f, c) for r, f, c in seen.commits) == sorted(
        [(str(shared), 0, [1, 2]), (str(shared), 2, [3]), (str(shared), 3, [4])]
        + [(str(shared), 4, [5])]
        + [(str(root), 0, [10, 11]) for root in ours]
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
