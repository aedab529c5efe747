"""The bus against a real server: filters and wildcard routing, core mode's
at-most-once delivery, live JetStream subscriptions and catch-up subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import uuid
from collections.abc import AsyncIterator

import pytest

import angzarr_es
from angzarr_es import ConfigError, filters
from angzarr_es.bus import CatchUp, Delivery, Subscription
from angzarr_es.config import Config
from angzarr_es.embedded import EmbeddedServer
from angzarr_es.pb import core_pb2, hand_pb2
from angzarr_es.subjects import root_bytes
from angzarr_es.testing import faults
from angzarr_es.testing.faults import Forward, Reply, Request
from tests.support import jsadmin
from tests.support.bus import Recorder
from tests.support.configs import with_nats
from tests.support.events import deposit

# -- filters (pure) -----------------------------------------------------------


def test_filters_follow_the_seed_and_the_prefix() -> None:
    assert filters.domain("player").subject("angzarr") == "angzarr.events.player.*"
    assert filters.domain("hand", deep=True).subject("angzarr") == "angzarr.events.hand.>"
    assert filters.everything().subject("angzarr") == "angzarr.events.>"
    assert filters.domain("player").subject("acme.prod") == "acme.prod.events.player.*"
    assert filters.aggregate("player", "p 1").subject("a") == "a.events.player.~cCAx"
    assert filters.resolve("angzarr.events.*.>", "angzarr") == "angzarr.events.*.>"
    assert filters.resolve("angzarr.>", "angzarr") == "angzarr.>"
    for never_a_commit in ("player", "other.events.player.*", "angzarr.snapshots.>"):
        with pytest.raises(ValueError, match=r"not under 'angzarr\.events\.'"):
            filters.resolve(never_a_commit, "angzarr")
    with pytest.raises(angzarr_es.InvalidDomain):
        filters.domain("a.b")
    with pytest.raises(TypeError):
        filters.resolve(3, "a")  # type: ignore[arg-type]


# -- fixtures -----------------------------------------------------------------


@pytest.fixture
async def js_client(config: Config) -> AsyncIterator[angzarr_es.Client]:
    async with await angzarr_es.connect(config=config) as c:
        await c.provision()
        yield c
        assert await jsadmin.consumer_names(c, config.nats.stream_name) == []
        await jsadmin.delete_stream(c, config.nats.stream_name)


@pytest.fixture
def core_config(config: Config) -> Config:
    return with_nats(config, jetstream=False)


def book(domain: str, root: str, *events: object) -> core_pb2.EventBook:
    b = core_pb2.EventBook()
    b.cover.domain = domain
    b.cover.root.value = root_bytes(root)
    for i, e in enumerate(events):
        page = b.pages.add()
        page.header.sequence = i
        page.event.Pack(e, type_url_prefix="")  # type: ignore[arg-type]
    return b


# -- wildcard routing -----------------------------------------------------------


@pytest.mark.parametrize("mode", ["core", "jetstream"])
async def test_wildcard_routing_per_the_seed(mode: str, config: Config) -> None:
    cfg = with_nats(config, jetstream=mode == "jetstream")
    prefix = cfg.nats.subject_prefix
    async with await angzarr_es.connect(config=cfg) as c:
        if mode == "jetstream":
            await c.provision()
        players, hands, everything, deep_hands = Recorder(), Recorder(), Recorder(), Recorder()
        subs = [
            await c.bus.subscribe(filters.domain("player"), players),
            await c.bus.subscribe(filters.domain("hand"), hands),
            await c.bus.subscribe(f"{prefix}.events.*.>", everything),
            await c.bus.subscribe(filters.domain("hand", deep=True), deep_hands),
        ]
        edition = book("hand", "h1", hand_pb2.CardsDealt())
        if mode == "jetstream":
            await c.store("player").append("p1", [deposit(1)], expected=0)
            await c.store("hand").append("h1", [hand_pb2.CardsDealt()], expected=0)
            await c.store("player").append("p2", [deposit(2)], expected=0)
            # A deeper sub-subject (an edition), as stored by a future writer.
            ack = await jsadmin.publish(
                c, f"{prefix}.events.hand.h1.v2", edition.SerializeToString()
            )
            assert ack.error is None
        else:
            await c.bus.publish(book("player", "p1", deposit(1)))
            await c.bus.publish(book("hand", "h1", hand_pb2.CardsDealt()))
            await c.bus.publish(book("player", "p2", deposit(2)))
            await jsadmin.publish_unacked(
                c, f"{prefix}.events.hand.h1.v2", edition.SerializeToString()
            )
        await everything.wait_count(4)
        await deep_hands.wait_count(2)
        await players.wait_count(2)
        await hands.wait_count(1)
        for s in subs:
            await s.close()
        if mode == "jetstream":
            assert await jsadmin.consumer_names(c, cfg.nats.stream_name) == []
            await jsadmin.delete_stream(c, cfg.nats.stream_name)

    def keys(r: Recorder) -> list[tuple[str, str]]:
        return [(d.domain, d.root) for d in r.seen]

    assert keys(players) == [("player", "p1"), ("player", "p2")]
    assert keys(hands) == [("hand", "h1")]
    assert keys(deep_hands) == [("hand", "h1"), ("hand", "h1")]
    assert [d.subject.rsplit(".", 1)[-1] for d in deep_hands.seen] == ["h1", "v2"]
    assert sorted(keys(everything)) == [
        ("hand", "h1"),
        ("hand", "h1"),
        ("player", "p1"),
        ("player", "p2"),
    ]
    first = players.seen[0]
    assert first.events[0].event == deposit(1)
    if mode == "jetstream":
        assert [d.stream_sequence for d in everything.seen] == [1, 2, 3, 4]
        assert first.delivery_count == 1
    else:
        assert first.stream_sequence == 0
        assert first.delivery_count == 0


# -- core mode ----------------------------------------------------------------


async def test_deliveries_name_their_edition(js_client: angzarr_es.Client) -> None:
    """A what-if timeline's commits match everything() too: Delivery.edition
    tells them from the main timeline's (they looked the same before)."""
    seen = Recorder()
    async with await js_client.bus.subscribe(filters.everything(), seen):
        await js_client.store("player").append("p", [deposit(1)], expected=0)
        await js_client.store("player", edition="what-if").append("p", [deposit(2)], expected=0)
        await seen.wait_count(2)
    assert [(d.root, d.edition) for d in seen.seen] == [("p", ""), ("p", "what-if")]


async def test_core_publish_sends_a_what_if_book_on_its_edition_s_subject(
    core_config: Config,
) -> None:
    """It went out on the main timeline's subject, which domain() matches (a review)."""
    async with await angzarr_es.connect(config=core_config) as c:
        main, deep = Recorder(), Recorder()
        await c.bus.subscribe(filters.domain("player"), main)
        await c.bus.subscribe(filters.domain("player", deep=True), deep)
        what_if = book("player", "r1", deposit(1))
        what_if.cover.edition.name = "what-if"
        await c.bus.publish(what_if)
        await c.bus.publish(book("player", "r2", deposit(2)))
        await deep.wait_count(2)
        await main.wait_count(1)
        # A 16-character text id is 16 bytes too: it was read as a UUID.
        await c.bus.publish(book("player", "sixteen-chars-id", deposit(3)))
        uid = uuid.UUID("7d444840-9dc0-11d1-b245-5ffdce74fad2")
        await c.bus.publish(book("player", str(uid), deposit(4)))
        await main.wait_count(3)
        with pytest.raises(TypeError, match="EventBook"):
            await c.bus.publish("not a book")  # type: ignore[arg-type]
    prefix = core_config.nats.subject_prefix
    assert [(d.subject, d.edition) for d in deep.seen[:2]] == [
        (f"{prefix}.events.player.r1.what-if", "what-if"),
        (f"{prefix}.events.player.r2", ""),
    ]
    assert [d.root for d in main.seen] == ["r2", "sixteen-chars-id", str(uid)]


async def test_core_mode_is_at_most_once(core_config: Config) -> None:
    """A connected subscriber gets every event; one that is not connected misses them,
    and no stream is involved."""
    async with (
        await angzarr_es.connect(config=core_config) as publisher,
        await angzarr_es.connect(config=core_config) as listener,
    ):
        steady, flaky = Recorder(), Recorder()
        await listener.bus.subscribe(filters.domain("player"), steady)
        sub = await listener.bus.subscribe(filters.domain("player"), flaky)
        for i in range(10):
            await publisher.bus.publish(book("player", f"p{i}", deposit(i)))
        await flaky.wait_count(10)
        await sub.close()  # disconnected from here ...
        for i in range(10, 20):
            await publisher.bus.publish(book("player", f"p{i}", deposit(i)))
        await steady.wait_count(20)
        sub = await listener.bus.subscribe(filters.domain("player"), flaky)  # ... back
        for i in range(20, 25):
            await publisher.bus.publish(book("player", f"p{i}", deposit(i)))
        await steady.wait_count(25)
        await flaky.wait_count(15)
        await sub.close()
        info = await jsadmin.stream_info(publisher, core_config.nats.stream_name)
        assert b"stream not found" in info
    assert [d.root for d in steady.seen] == [f"p{i}" for i in range(25)]
    missed = [f"p{i}" for i in range(10)] + [f"p{i}" for i in range(20, 25)]
    assert [d.root for d in flaky.seen] == missed


async def test_core_publish_refuses_subjects_a_stream_captures(core_config: Config) -> None:
    """With the event store provisioned in core mode, a published book would be
    stored as one more commit of its aggregate (and every append already
    reaches core subscribers): publish refuses, and nothing is stored."""
    async with await angzarr_es.connect(config=core_config) as early:
        # No stream yet: fine (a client trusts that answer for a while, so the
        # refusal below is asked of a client that has not published yet).
        await early.bus.publish(book("player", "p1", deposit(1)))
    async with await angzarr_es.connect(config=core_config) as c:
        await c.provision()
        seen = Recorder()
        await c.bus.subscribe(filters.domain("player"), seen)
        await c.store("player").append("p1", [deposit(1)], expected=0)
        await seen.wait_count(1)  # the append itself reached the core subscriber
        with pytest.raises(ConfigError, match=core_config.nats.stream_name):
            await c.bus.publish(book("player", "p1", deposit(2)))
        hist = await c.store("player").load("p1")
        assert [e.event for e in hist.events] == [deposit(1)]
        await c.store("player").append("p1", [deposit(3)], expected=1)
        await jsadmin.delete_stream(c, core_config.nats.stream_name)
        await c.bus.publish(book("player", "p1", deposit(4)))  # captured no more
        await seen.wait_count(3)
    assert [d.events[0].event for d in seen.seen] == [deposit(1), deposit(3), deposit(4)]


async def test_core_publish_works_where_jetstream_cannot_be_asked(config: Config) -> None:
    """An account without JetStream, and a user not allowed to use its API:
    nothing can capture their subjects, so publish goes ahead (both raised
    after the capture check came in)."""
    accounts = """
accounts {
  JS { jetstream: enabled, users: [{user: js, password: js}] }
  CORE { users: [
    {user: core, password: core},
    {user: pub, password: pub, permissions: {publish: ["app.>"], subscribe: ["app.>", "_INBOX.>"]}}
  ] }
}
"""
    with EmbeddedServer(extra_config=accounts, monitor_port=None) as server:
        for user in ("core", "pub"):
            cfg = with_nats(
                config, url=server.url, jetstream=False, user=user, password=user,
                subject_prefix="app",
            )  # fmt: skip
            async with await angzarr_es.connect(config=cfg) as c:
                seen = Recorder()
                await c.bus.subscribe(filters.domain("player"), seen)
                await c.bus.publish(book("player", "p1", deposit(1)))
                await seen.wait_count(1)


async def test_core_mode_refuses_history_and_jetstream_refuses_publish(
    core_config: Config, js_client: angzarr_es.Client
) -> None:
    async with await angzarr_es.connect(config=core_config) as c:
        with pytest.raises(ValueError, match="no history"):
            await c.bus.subscribe(filters.everything(), Recorder(), start="all")
        with pytest.raises(ConfigError, match="need JetStream"):
            c.projector("p", filters.everything(), Recorder())
        with pytest.raises(ConfigError, match="need JetStream"):
            c.subscribe(filters.everything())
    with pytest.raises(ConfigError, match="JetStream mode"):
        await js_client.bus.publish(book("player", "p", deposit(1)))


async def test_a_failing_subscription_handler_does_not_stop_the_subscription(
    js_client: angzarr_es.Client,
) -> None:
    async def fail_on_first(d: Delivery) -> None:
        if d.root == "p0":
            raise RuntimeError("boom")

    seen = Recorder(fail_on_first)
    async with await js_client.bus.subscribe(filters.domain("player"), seen):
        for i in range(3):
            await js_client.store("player").append(f"p{i}", [deposit(i)], expected=0)
        await seen.wait_count(3)
    assert [d.root for d in seen.seen] == ["p0", "p1", "p2"]


def _sync_handler(d: Delivery) -> None:
    pass


async def _async_handler(d: Delivery) -> None:
    pass


async def test_sync_handlers_are_refused_when_made_and_async_callables_accepted(
    js_client: angzarr_es.Client,
) -> None:
    """A plain `def` handler failed on `await None` at every delivery, so a
    projector dead-lettered every commit (issue 19)."""
    players = filters.domain("player")
    for bad in (_sync_handler, lambda d: None, print):
        with pytest.raises(TypeError, match="async def"):
            js_client.projector("sync", players, bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="async def"):
            await js_client.bus.subscribe(players, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="async function"):
        js_client.projector("sync", players, "not callable")  # type: ignore[call-overload]
    # on_skip is called, not awaited: an async one would never run.
    with pytest.raises(TypeError, match="on_skip"):
        js_client.subscribe(players, on_skip=_async_handler)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_skip"):
        await js_client.bus.subscribe(players, Recorder(), on_skip=_async_handler)  # type: ignore[arg-type]
    assert await jsadmin.consumer_names(js_client, js_client.config.nats.stream_name) == []
    # Accepted: async def, an object with an async __call__, a partial of one.
    for good in (_async_handler, Recorder(), functools.partial(_async_handler)):
        js_client.projector("fine", players, good)
        sub = await js_client.bus.subscribe(players, good, on_skip=lambda s, q, e: None)
        await sub.close()


# -- catch-up subscriptions -------------------------------------------------------


async def test_catch_up_replays_history_then_follows_live(js_client: angzarr_es.Client) -> None:
    store = js_client.store("player")
    for i in range(5):
        await store.append("p", [deposit(i)], expected=i)
    await js_client.store("hand").append("h", [hand_pb2.CardsDealt()], expected=0)
    got: list[int] = []
    async with js_client.subscribe(filters.domain("player"), start="all") as sub:
        assert len(await jsadmin.consumer_names(js_client, js_client.config.nats.stream_name)) == 1
        async for d in sub:
            got.append(d.events[0].sequence)
            if len(got) == 5:
                # history done: now write live events while following
                for i in range(5, 8):
                    await store.append("p", [deposit(i)], expected=i)
            if len(got) == 8:
                break
    assert got == list(range(8))


async def test_catch_up_from_a_sequence_or_a_time(js_client: angzarr_es.Client) -> None:
    store = js_client.store("player")
    r = [await store.append("p", [deposit(i)], expected=i) for i in range(3)]
    middle = dt.datetime.now(dt.UTC)
    r += [await store.append("p", [deposit(i)], expected=i) for i in range(3, 6)]
    seqs = [x.stream_sequence for x in r]

    async def first_n(start: object, n: int) -> list[int]:
        out: list[int] = []
        async with js_client.subscribe(filters.everything(), start=start) as sub:  # type: ignore[arg-type]
            async for d in sub:
                out.append(d.stream_sequence)
                if len(out) == n:
                    break
        return out

    assert await first_n(seqs[4], 2) == seqs[4:]
    assert await first_n(middle, 3) == seqs[3:]
    with pytest.raises(ValueError, match="timezone"):
        js_client.subscribe(filters.everything(), start=dt.datetime.now())
    with pytest.raises(TypeError):
        js_client.subscribe(filters.everything(), start="beginning")  # type: ignore[arg-type]


async def test_catch_up_from_new_sees_only_later_commits(js_client: angzarr_es.Client) -> None:
    store = js_client.store("player")
    await store.append("old", [deposit(1)], expected=0)
    async with js_client.subscribe(filters.domain("player"), start="new") as sub:
        await store.append("new", [deposit(2)], expected=0)
        d = await anext(sub)
    assert d.root == "new"


async def test_catch_up_survives_losing_its_consumer(js_client: angzarr_es.Client) -> None:
    """If the server drops the ephemeral consumer mid-stream, the subscription makes
    a new one from the last sequence it saw: nothing skipped, nothing repeated."""
    store = js_client.store("player")
    for i in range(5):
        await store.append("p", [deposit(i)], expected=i)
    got: list[int] = []
    stream = js_client.config.nats.stream_name
    async with js_client.subscribe(filters.domain("player"), start="all") as sub:
        async for d in sub:
            got.append(d.stream_sequence)
            if len(got) == 3:
                (name,) = await jsadmin.consumer_names(js_client, stream)
                await jsadmin.delete_consumer(js_client, stream, name)
                for i in range(5, 7):
                    await store.append("p", [deposit(i)], expected=i)
            if len(got) == 7:
                break
        (renewed,) = await jsadmin.consumer_names(js_client, stream)
        assert renewed != name
    assert got == [1, 2, 3, 4, 5, 6, 7]


async def foreign(client: angzarr_es.Client, subject: str, payload: bytes) -> None:
    """A message someone else stores on the event stream's subjects."""
    ack = await jsadmin.publish(client, subject, payload)
    assert ack.error is None


async def test_foreign_messages_are_skipped_not_fatal(js_client: angzarr_es.Client) -> None:
    """An undecodable message (bad bytes on an aggregate subject, or a subject
    no aggregate has) is skipped with a warning by a live subscription and by
    a catch-up: it ended both before (the live one silently)."""
    prefix = js_client.config.nats.subject_prefix
    store = js_client.store("player")
    live = Recorder()
    async with await js_client.bus.subscribe(filters.everything(), live):
        await store.append("p", [deposit(0)], expected=0)
        await foreign(js_client, f"{prefix}.events.player.junk", b"\xff\xff")
        await foreign(js_client, f"{prefix}.events.legacy", book("player", "x").SerializeToString())
        await store.append("p", [deposit(1)], expected=1)
        await live.wait_count(2)
    assert [d.events[0].sequence for d in live.seen] == [0, 1]
    got = []
    async with js_client.subscribe(filters.everything(), start="all") as sub:
        async for d in sub:
            got.append(d.stream_sequence)
            if len(got) == 2:
                break
    assert got == [1, 4]


async def lose_consumers(client: angzarr_es.Client) -> None:
    """Delete the stream's consumers on the server: a catch-up's pull is
    answered 409 "Consumer Deleted", and it makes a new one."""
    stream = client.config.nats.stream_name
    for name in await jsadmin.consumer_names(client, stream):
        await jsadmin.delete_consumer(client, stream, name)


async def test_catch_up_resumes_where_it_was_after_the_server_was_away(
    js_client: angzarr_es.Client, interceptions: contextlib.ExitStack
) -> None:
    """While the consumer cannot be re-created (server away) the catch-up
    retries; it then goes on after the last commit it delivered. It restarted
    from its original start before, repeating history."""
    store = js_client.store("player")
    for i in range(3):
        await store.append("p", [deposit(i)], expected=i)
    failures = 0

    async def away(request: Request, forward: Forward) -> Reply:
        nonlocal failures
        if faults.operation(request) == "CONSUMER.CREATE" and failures < 2:
            failures += 1
            raise angzarr_es.StoreTimeout(f"{request.what}: no answer from NATS in time")
        return await forward(request)

    got = []
    async with js_client.subscribe(filters.domain("player"), start="all") as sub:
        async for d in sub:
            got.append(d.stream_sequence)
            if len(got) == 3:  # history read: lose the consumer, then write more
                interceptions.enter_context(faults.intercept(js_client, on_request=away))
                await lose_consumers(js_client)
                await store.append("p", [deposit(3)], expected=3)
            if len(got) == 4:
                break
    assert failures == 2
    assert got == [1, 2, 3, 4]


async def test_closing_a_catch_up_from_another_task_ends_its_iteration(
    js_client: angzarr_es.Client,
) -> None:
    sub = js_client.subscribe(filters.domain("player"), start="all")
    await sub.open()
    first = asyncio.Event()
    got: list[int] = []

    async def read() -> None:
        async for d in sub:
            got.append(d.stream_sequence)
            first.set()

    reader = asyncio.create_task(read())
    await js_client.store("player").append("p", [deposit(0)], expected=0)
    await asyncio.wait_for(first.wait(), 10)
    await sub.aclose()  # the reader now waits for more, in its own task
    await asyncio.wait_for(reader, 10)  # ended by the close (an AssertionError before)
    assert got == [1]


async def test_a_catch_up_ends_when_its_client_is_closed(config: Config) -> None:
    """It retried making its consumer for ever on a closed connection (a review).
    One made by `client.subscribe` is closed by `client.close()` (one made
    otherwise: tests/integration/test_catchup_unowned.py)."""
    client = await angzarr_es.connect(config=config)
    await client.provision()
    seen = asyncio.Event()

    async def read(sub: CatchUp) -> None:
        async with sub:
            async for _ in sub:
                seen.set()

    owned = asyncio.create_task(read(client.subscribe(filters.domain("player"))))
    await client.store("player").append("p", [deposit(0)], expected=0)
    await asyncio.wait_for(seen.wait(), 10)
    async with await angzarr_es.connect(config=config) as other:
        await client.close()
        await asyncio.wait_for(owned, 20)  # closed with its client: just ends
        await jsadmin.delete_stream(other, config.nats.stream_name)


@pytest.mark.parametrize("mode", ["core", "jetstream"])
async def test_a_handler_can_close_its_own_subscription(mode: str, config: Config) -> None:
    cfg = with_nats(config, jetstream=mode == "jetstream")
    subs: list[Subscription] = []
    closed = asyncio.Event()

    async def close_on_first(d: Delivery) -> None:
        await subs[0].close()  # deadlocked before: close waited for this very call
        closed.set()

    seen = Recorder(close_on_first)
    async with await angzarr_es.connect(config=cfg) as c:
        if mode == "jetstream":
            await c.provision()
        subs.append(await c.bus.subscribe(filters.domain("player"), seen))
        for i in range(3):
            if mode == "jetstream":
                await c.store("player").append(f"p{i}", [deposit(i)], expected=0)
            else:
                await c.bus.publish(book("player", f"p{i}", deposit(i)))
        await asyncio.wait_for(closed.wait(), 10)
        if mode == "jetstream":
            assert await jsadmin.consumer_names(c, cfg.nats.stream_name) == []
            await jsadmin.delete_stream(c, cfg.nats.stream_name)
    assert len(seen.seen) == 1


async def test_a_core_handler_goes_on_after_closing_its_subscription(config: Config) -> None:
    """nats-py cancels the task that runs a subscription's callbacks when it
    unsubscribes: closing from the handler defers that until it returns."""
    cfg = with_nats(config, jetstream=False)
    subs: list[Subscription] = []
    done = asyncio.Event()

    async def close_then_work(d: Delivery) -> None:
        await subs[0].close()
        await asyncio.sleep(0)  # any await after close(): it was cancelled here before
        done.set()

    async with await angzarr_es.connect(config=cfg) as c:
        subs.append(await c.bus.subscribe(filters.domain("player"), close_then_work))
        await c.bus.publish(book("player", "p1", deposit(1)))
        await asyncio.wait_for(done.wait(), 10)


@pytest.mark.parametrize("mode", ["core", "jetstream"])
async def test_closing_from_the_handler_through_wait_for(mode: str, config: Config) -> None:
    """asyncio.wait_for runs close() in a task of its own (Python 3.11): it is
    still a close from the handler, not a wait for it (a deadlock before)."""
    cfg = with_nats(config, jetstream=mode == "jetstream")
    subs: list[Subscription] = []
    closed = asyncio.Event()

    async def close_on_first(d: Delivery) -> None:
        await asyncio.wait_for(subs[0].close(), 5)
        closed.set()

    async with await angzarr_es.connect(config=cfg) as c:
        if mode == "jetstream":
            await c.provision()
        subs.append(await c.bus.subscribe(filters.domain("player"), close_on_first))
        if mode == "jetstream":
            await c.store("player").append("p1", [deposit(1)], expected=0)
        else:
            await c.bus.publish(book("player", "p1", deposit(1)))
        await asyncio.wait_for(closed.wait(), 10)
        if mode == "jetstream":
            assert await jsadmin.consumer_names(c, cfg.nats.stream_name) == []
            await jsadmin.delete_stream(c, cfg.nats.stream_name)


async def test_a_core_close_from_work_the_handler_left_behind_unsubscribes(
    config: Config,
) -> None:
    cfg = with_nats(config, jetstream=False)
    subs: list[Subscription] = []
    later: list[asyncio.Task[None]] = []
    seen = asyncio.Event()

    async def spawn_close(d: Delivery) -> None:
        later.append(asyncio.create_task(subs[0].close()))  # runs after we return
        seen.set()

    async with await angzarr_es.connect(config=cfg) as c:
        subs.append(await c.bus.subscribe(filters.domain("player"), spawn_close))
        before = c.subscription_count
        await c.bus.publish(book("player", "p1", deposit(1)))
        await asyncio.wait_for(seen.wait(), 10)
        await asyncio.wait_for(later[0], 10)
        assert c.subscription_count == before - 1  # it returned without unsubscribing


def slow_consumer_put(
    interceptions: contextlib.ExitStack, client: angzarr_es.Client, *, made_first: bool
) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold consumer creation until `release` is set, before asking the server
    or (`made_first`) after it made the consumer; `making` is set when held."""
    making, release = asyncio.Event(), asyncio.Event()

    async def slow(request: Request, forward: Forward) -> Reply:
        if faults.operation(request) != "CONSUMER.CREATE":
            return await forward(request)
        made = await forward(request) if made_first else None
        making.set()
        await release.wait()
        return made if made is not None else await forward(request)

    interceptions.enter_context(faults.intercept(client, on_request=slow))
    return making, release


async def test_closing_a_subscription_while_it_remakes_its_consumer_leaves_none(
    js_client: angzarr_es.Client, interceptions: contextlib.ExitStack
) -> None:
    stream = js_client.config.nats.stream_name
    seen = Recorder()
    sub = await js_client.bus.subscribe(filters.domain("player"), seen)
    await js_client.store("player").append("p", [deposit(0)], expected=0)
    await seen.wait_count(1)
    making, release = slow_consumer_put(interceptions, js_client, made_first=True)
    (name,) = await jsadmin.consumer_names(js_client, stream)
    await jsadmin.delete_consumer(js_client, stream, name)  # forces a re-make
    await asyncio.wait_for(making.wait(), 30)
    closing = asyncio.create_task(sub.close())
    release.set()
    await asyncio.wait_for(closing, 10)
    assert await jsadmin.consumer_names(js_client, stream) == []


async def test_a_timestamp_out_of_range_is_skipped_and_close_cleans_up(
    js_client: angzarr_es.Client,
) -> None:
    """A foreign commit whose timestamp no datetime holds raised OverflowError:
    it killed the live subscription, and close() then left its consumer."""
    prefix = js_client.config.nats.subject_prefix
    far = book("player", "x", deposit(0))
    far.pages[0].created_at.seconds = 2**60
    live = Recorder()
    sub = await js_client.bus.subscribe(filters.domain("player"), live)
    await foreign(js_client, f"{prefix}.events.player.x", far.SerializeToString())
    await js_client.store("player").append("p", [deposit(1)], expected=0)
    await live.wait_count(1)
    await sub.close()
    assert [d.root for d in live.seen] == ["p"]
    assert await jsadmin.consumer_names(js_client, js_client.config.nats.stream_name) == []
    with pytest.raises(angzarr_es.CodecError, match="out of range"):
        await js_client.store("player").load("x")


async def test_closing_a_catch_up_while_it_makes_its_consumer_leaves_none(
    js_client: angzarr_es.Client, interceptions: contextlib.ExitStack
) -> None:
    await js_client.store("player").append("p", [deposit(0)], expected=0)
    sub = js_client.subscribe(filters.domain("player"), start="all")
    await sub.open()
    assert (await anext(sub)).stream_sequence == 1
    making, release = slow_consumer_put(interceptions, js_client, made_first=False)
    await lose_consumers(js_client)
    reader = asyncio.create_task(anext(sub, None))
    await asyncio.wait_for(making.wait(), 10)
    closing = asyncio.create_task(sub.aclose())
    release.set()
    await closing
    assert await asyncio.wait_for(reader, 10) is None
    assert await jsadmin.consumer_names(js_client, js_client.config.nats.stream_name) == []


def test_consumers_and_the_dlq_stream_come_from_the_config_file(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "angzarr.toml"
    path.write_text(
        "[bus.nats]\n"
        'dlq_stream = "my-dlq"\n'
        "[[bus.nats.consumers]]\n"
        'name = "player-projector"\n'
        'filter = "angzarr.events.player.*"\n'
        "max_deliver = 7\n"
    )
    cfg = Config.load(path, env={})
    assert cfg.nats.dlq_stream == "my-dlq"
    (spec,) = cfg.nats.consumers
    assert (spec.name, spec.filter, spec.max_deliver, spec.ack_wait) == (
        "player-projector",
        "angzarr.events.player.*",
        7,
        30.0,
    )
    path.write_text('[[bus.nats.consumers]]\nname = "a.b"\nfilter = "x"\n')
    with pytest.raises(ConfigError, match="consumers"):
        Config.load(path, env={})


@pytest.mark.parametrize("mode", ["core", "jetstream"])
async def test_closing_a_subscription_lets_the_running_handler_finish(
    mode: str, config: Config
) -> None:
    cfg = with_nats(config, jetstream=mode == "jetstream")
    release = asyncio.Event()
    finished: list[str] = []

    async def slow(d: Delivery) -> None:
        await release.wait()
        finished.append(d.root)

    seen = Recorder(slow)
    async with await angzarr_es.connect(config=cfg) as c:
        if mode == "jetstream":
            await c.provision()
        sub = await c.bus.subscribe(filters.domain("player"), seen)
        for i in range(3):
            if mode == "jetstream":
                await c.store("player").append(f"p{i}", [deposit(i)], expected=0)
            else:
                await c.bus.publish(book("player", f"p{i}", deposit(i)))
        await seen.wait_count(1)
        closing = asyncio.create_task(sub.close())
        await asyncio.sleep(0)  # let close() begin: it must wait for the handler
        assert not closing.done()
        release.set()
        await closing
        if mode == "jetstream":
            assert await jsadmin.consumer_names(c, cfg.nats.stream_name) == []
            await jsadmin.delete_stream(c, cfg.nats.stream_name)
    assert finished == ["p0"]  # finished, not cancelled; nothing started after close
    assert len(seen.seen) == 1
