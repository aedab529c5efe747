"""The client's contract beyond the stores: its lifecycle, provisioning, stream
sequences and the bus (projectors, catch-up and live subscriptions), in memory
and on a server alike (the `backend` fixture: tests/integration/conftest.py).

Found by trying the product (issue 19): the in-memory client lacked `close`,
`async with`, `provision`, `projector` and `subscribe`, and its stream
sequences were always 0, so an application that swapped it in for unit
tests did not run."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

import angzarr_es
from angzarr_es import Delivery, filters
from angzarr_es._contract import ClientProtocol as Backend
from angzarr_es.config import Config
from angzarr_es.pb.player_pb2 import PlayerRegistered
from angzarr_es.testing import InMemoryClient
from tests.support import jsadmin
from tests.support.bus import WAIT, Recorder
from tests.support.configs import fresh_config
from tests.support.events import deposit


@pytest.fixture
def config(nats_url: str) -> Config:
    """The `backend` fixture's base: spanning projectors and subscriptions
    look for new domain streams every 50 ms, not 5 s (tests below wait for
    a domain first written while they run)."""
    return fresh_config(nats_url, stream_discovery_interval=0.05)


def test_the_testing_module_comes_with_the_package() -> None:
    import subprocess
    import sys

    code = "import angzarr_es; print(angzarr_es.testing.InMemoryClient.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "InMemoryClient"


async def test_stream_sequences_increase_with_every_commit(backend: Backend) -> None:
    players, hands = backend.store("player"), backend.store("hand")
    seqs = [
        (await players.append("a", [deposit(1)], expected=0)).stream_sequence,
        (await hands.append("a", [deposit(2), deposit(3)], expected=0)).stream_sequence,
        (await players.append("b", [deposit(4)], expected=0, correlation_id="wf")).stream_sequence,
        (await players.append("a", [deposit(5)], expected=1, idempotency_key="k")).stream_sequence,
    ]
    assert min(seqs) > 0
    # Per stream: the per-domain layout has one per domain (hands' is another).
    mine = [seqs[0], seqs[2], seqs[3]]
    assert mine == sorted(set(mine)), seqs
    if backend.config.nats.stream_layout == "single":
        assert seqs == sorted(set(seqs)), seqs
    again = await players.append("a", [deposit(5)], expected=1, idempotency_key="k")
    assert (again.duplicate, again.stream_sequence) == (True, seqs[-1])
    assert (await players.append("a", [], expected=2)).stream_sequence == 0


async def test_the_client_provisions_closes_and_refuses_work_after(backend: Backend) -> None:
    async with backend as same:
        assert same is backend
        plan = await backend.provision()  # the fixture provisioned: nothing to do
        first = (
            "event stream"
            if backend.config.nats.stream_layout == "single"
            else "correlation stream"
        )
        assert (plan.action, plan.events.role) == ("none", first)
        assert backend.config.nats.consumers[0].name == "configured"
        await backend.store("player").append("p", [deposit(1)], expected=0)
        assert await backend.has_events("player")
        assert not await backend.has_events("hand")
        assert not backend.closed
    assert backend.closed
    try:
        await backend.store("player").load("p")
    except angzarr_es.StoreUnavailable:
        pass
    else:
        raise AssertionError("a closed client loaded")


async def test_a_projector_handles_every_commit_in_order_and_resumes(backend: Backend) -> None:
    players = backend.store("player")
    first = [
        await players.append("a", [deposit(1)], expected=0),
        await players.append("b", [deposit(2), deposit(3)], expected=0),
        await players.append("a", [deposit(4)], expected=1),
    ]
    seen = Recorder()
    async with backend.projector("proj", filters.domain("player"), seen) as p:
        assert p.name == "proj"
        await p.wait(lambda s: s.handled >= 3, timeout=WAIT)
        assert p.running
    assert not p.running
    assert [(d.root, d.stream_sequence) for d in seen.seen] == [
        ("a", first[0].stream_sequence),
        ("b", first[1].stream_sequence),
        ("a", first[2].stream_sequence),
    ]
    assert [[e.event.amount_cents for e in d.events] for d in seen.seen] == [[1], [2, 3], [4]]
    assert {d.delivery_count for d in seen.seen} == {1}
    later = await players.append("b", [deposit(5)], expected=2)
    await backend.store("hand").append("h", [deposit(6)], expected=0)  # another domain
    again = Recorder()
    async with backend.projector("proj", filters.domain("player"), again) as p:
        await p.wait(lambda s: s.handled >= 1, timeout=WAIT)
        await again.wait_count(1)
    assert [d.stream_sequence for d in again.seen] == [later.stream_sequence]
    replay = Recorder()
    p = backend.projector("proj", filters.domain("player"), replay)
    await p.reset("all")  # not running: not started
    assert not p.running
    async with p:
        await p.wait(lambda s: s.handled >= 4, timeout=WAIT)
    assert [d.root for d in replay.seen] == ["a", "b", "a", "b"]
    await p.delete()


async def test_a_failing_handler_is_retried_then_dead_lettered(backend: Backend) -> None:
    async def fail_on_b(d: Delivery) -> None:
        if d.root == "b":
            raise RuntimeError("boom")

    players = backend.store("player")
    for root in ("a", "b", "c"):
        await players.append(root, [deposit(1)], expected=0)
    seen = Recorder(fail_on_b)
    proj = backend.projector(
        "failing", filters.domain("player"), seen, max_deliver=2, backoff=[0.0]
    )
    async with proj as p:
        stats = await p.wait(lambda s: s.handled + s.dead_lettered >= 3, timeout=WAIT)
    assert (stats.handled, stats.failed, stats.dead_lettered) == (2, 2, 1)
    assert [d.delivery_count for d in seen.seen if d.root == "b"] == [1, 2]
    await proj.delete()


async def test_a_projector_named_alone_takes_its_configured_filter(backend: Backend) -> None:
    await backend.store("player", "what-if").append("p", [deposit(1)], expected=0)
    await backend.store("player").append("p", [deposit(2)], expected=0)
    seen = Recorder()
    async with backend.projector("configured", seen) as p:
        assert p.settings.subject.endswith(".events.player.>")
        assert p.settings.max_deliver == 3
        await p.wait(lambda s: s.handled >= 2, timeout=WAIT)
    assert sorted(d.edition for d in seen.seen) == ["", "what-if"]  # the deep form
    await p.delete()


async def test_a_catch_up_subscription_replays_then_follows(backend: Backend) -> None:
    players = backend.store("player")
    old = await players.append("a", [deposit(1)], expected=0)
    await players.append("b", [deposit(2)], expected=0)
    async with backend.subscribe(filters.aggregate("player", "a"), start="all") as sub:
        assert sub.subject.endswith(".events.player.a")
        first = await anext(sub)
        assert (first.root, first.stream_sequence) == ("a", old.stream_sequence)
        new = await players.append("a", [deposit(3)], expected=1)
        second = await anext(sub)
        assert (second.stream_sequence, second.events[0].sequence) == (new.stream_sequence, 1)
    async with backend.subscribe(filters.domain("player"), start=new.stream_sequence) as sub:
        assert (await anext(sub)).stream_sequence == new.stream_sequence


async def test_a_live_subscription_delivers_new_commits(backend: Backend) -> None:
    players = backend.store("player")
    await players.append("old", [deposit(1)], expected=0)
    seen = Recorder()
    sub = await backend.bus.subscribe(filters.domain("player"), seen)
    assert backend.bus.jetstream
    stored = await players.append("new", [deposit(2)], expected=0)
    await seen.wait_count(1)
    await sub.close()
    assert [(d.root, d.stream_sequence) for d in seen.seen] == [("new", stored.stream_sequence)]


# -- filters spanning domains: in per-domain layout, spanning streams -------------


async def test_a_projector_over_every_domain_takes_each_domains_commits(backend: Backend) -> None:
    """In per-domain layout a filter spanning domains spans their streams: one
    lane per stream, and a domain first written while it runs is found."""
    await backend.store("player").append("a", [deposit(1)], expected=0)
    await backend.store("hand").append("h", [deposit(2)], expected=0)
    seen = Recorder()
    async with backend.projector("every", filters.everything(), seen) as p:
        await p.wait(lambda s: s.handled >= 2, timeout=WAIT)
        await backend.store("table").append("t", [deposit(3)], expected=0)  # a new domain
        await backend.store("player").append("a", [deposit(4)], expected=1)
        await p.wait(lambda s: s.handled >= 4, timeout=WAIT)
    assert sorted((d.domain, d.root, d.events[0].sequence) for d in seen.seen) == [
        ("hand", "h", 0),
        ("player", "a", 0),
        ("player", "a", 1),
        ("table", "t", 0),
    ]
    # One aggregate's commits in order (each domain's lane keeps its stream's).
    assert [d.events[0].sequence for d in seen.seen if d.root == "a"] == [0, 1]
    await backend.store("hand").append("h", [deposit(5)], expected=1)
    again = Recorder()
    async with backend.projector("every", filters.everything(), again) as p:
        await again.wait_count(1)  # resumes: only the new commit
    assert [(d.domain, d.root) for d in again.seen] == [("hand", "h")]
    await p.delete()


async def test_a_catch_up_subscription_over_every_domain(backend: Backend) -> None:
    await backend.store("player").append("a", [deposit(1)], expected=0)
    await backend.store("hand").append("h", [deposit(2)], expected=0)
    async with backend.subscribe(filters.everything(), start="all") as sub:
        async with asyncio.timeout(WAIT):
            got = [await anext(sub), await anext(sub)]
        assert sorted((d.domain, d.root) for d in got) == [("hand", "h"), ("player", "a")]
        await backend.store("table").append("t", [deposit(3)], expected=0)  # a new domain
        async with asyncio.timeout(WAIT):
            new = await anext(sub)
        assert (new.domain, new.root, new.events[0].event.amount_cents) == ("table", "t", 3)  # type: ignore[attr-defined]


# -- the clock ---------------------------------------------------------------------


@pytest.mark.parametrize("memory", [True, False], ids=["memory", "server"])
async def test_commits_and_snapshots_are_stamped_by_the_clients_clock(
    config: Config, memory: bool
) -> None:
    """`clock=`: deterministic `created_at` (tests, replays), in memory and on a server."""
    tick = dt.datetime(2030, 1, 2, 3, 4, 5, 6000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    client: Backend = (
        InMemoryClient(config=config, clock=lambda: tick)
        if memory
        else await angzarr_es.connect(config=config, clock=lambda: tick)
    )
    async with client:
        await client.provision()
        store = client.store("player")
        try:
            await store.append("p", [deposit(1)], expected=0)
            await store.append("p", [deposit(2), deposit(3)], expected=1)
            await store.save_snapshot("p", PlayerRegistered(name="a"), 2)
            assert [e.created_at for e in (await store.load("p")).events] == [tick] * 3
            snapshot = (await store.load("p", snapshot=True)).snapshot
            assert snapshot is not None
            assert snapshot.created_at == tick
        finally:
            if isinstance(client, angzarr_es.Client):
                await jsadmin.delete_stream(client, config.nats.stream_name)
                await jsadmin.delete_stream(client, config.nats.snapshot_stream)


@pytest.mark.parametrize(
    "clock",
    [dt.datetime.now, "now", lambda: dt.datetime(2030, 1, 1), lambda: 0.0],
    ids=["naive now", "a string", "naive", "a number"],
)
async def test_a_clock_that_gives_no_aware_datetime_is_refused(config: Config, clock: Any) -> None:
    with pytest.raises(TypeError, match="clock"):
        InMemoryClient(config=config, clock=clock)
    with pytest.raises(TypeError, match="clock"):
        await angzarr_es.connect(config=config, clock=clock)
