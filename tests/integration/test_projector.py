"""Durable projectors against a real server: acks, retries with backoff, dead
letters, in-progress acks, per-aggregate order under concurrency, scale-out,
partitions, checkpoints, replay, provisioning and a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import random
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

import msgspec
import pytest

import angzarr_es
from angzarr_es import ConsumerConfigError, Delivery, filters
from angzarr_es.bus import (
    H_DELIVERIES,
    H_ERROR,
    H_PROJECTOR,
    H_STREAM_SEQ,
    H_SUBJECT,
)
from angzarr_es.config import Config, ConsumerSpec
from angzarr_es.testing import faults
from angzarr_es.testing.faults import Forward, Reply, Request
from tests.support import jsadmin
from tests.support.bus import WAIT, Recorder, delete_dlq
from tests.support.cluster import eventually
from tests.support.configs import with_nats
from tests.support.events import deposit
from tests.support.jsadmin import messages as js
from tests.support.loadgen import until


@pytest.fixture
def bus_config(config: Config) -> Config:
    return with_nats(config, dlq_stream=config.nats.stream_name + "-dlq")


@pytest.fixture
async def client(bus_config: Config) -> AsyncIterator[angzarr_es.Client]:
    async with await angzarr_es.connect(config=bus_config) as c:
        await c.provision()
        yield c
        await jsadmin.delete_stream(c, bus_config.nats.stream_name)
        await delete_dlq(c)


async def append_many(client: angzarr_es.Client, roots: list[str], per_root: int) -> None:
    store = client.store("player")
    for i in range(per_root):
        for root in roots:
            await store.append(root, [deposit(i)], expected=i)


def sequences_by_root(seen: list[Delivery]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for d in seen:
        out[d.root].append(d.events[0].sequence)
    return dict(out)


async def test_handled_commits_are_acked_and_checkpointed(client: angzarr_es.Client) -> None:
    await append_many(client, ["a", "b"], 3)
    seen = Recorder()
    async with client.projector("proj", filters.domain("player"), seen) as p:
        await seen.wait_count(6)
        assert p.stats.handled <= 6
    assert p.stats.handled == 6
    assert await p.checkpoint() == 6
    assert [d.delivery_count for d in seen.seen] == [1] * 6
    assert [d.stream_sequence for d in seen.seen] == [1, 2, 3, 4, 5, 6]


async def test_failures_are_retried_with_backoff_then_dead_lettered(
    client: angzarr_es.Client,
) -> None:
    """The poisoned aggregate's commit is delivered 5 times, with the backoff between
    deliveries, copied to the DLQ with its headers and terminated; the other
    aggregates keep flowing meanwhile."""
    backoff = (0.05, 0.1, 0.2, 0.3)
    times: list[float] = []

    async def poisoned(d: Delivery) -> None:
        if d.root == "bad":
            times.append(time.monotonic())
            raise ValueError(f"cannot project\r\n {d.root}")

    store = client.store("player")
    bad = await store.append("bad", [deposit(13)], expected=0)
    await append_many(client, ["good"], 3)
    seen = Recorder(poisoned)
    async with client.projector("proj", filters.domain("player"), seen, backoff=backoff) as p:
        await p.wait(lambda s: s.dead_lettered == 1 and s.handled == 3, timeout=WAIT)
        dlq = await jsadmin.direct_get_last(
            client, client.config.nats.dlq_stream, f"{client.config.nats.subject_prefix}.dlq.player"
        )
        checkpoint = await p.checkpoint()
    bad_deliveries = [d.delivery_count for d in seen.seen if d.root == "bad"]
    assert bad_deliveries == [1, 2, 3, 4, 5]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= delay * 0.9 for gap, delay in zip(gaps, backoff, strict=True)), gaps
    assert sequences_by_root(seen.seen)["good"] == [0, 1, 2]
    assert p.stats.failed == 5
    # The dead letter: the original payload, and headers naming what happened.
    headers = dlq.headers or {}
    assert headers[H_PROJECTOR] == "proj"
    assert headers[H_DELIVERIES] == "5"
    assert headers[H_ERROR] == "ValueError: cannot project bad"
    assert headers[H_STREAM_SEQ] == str(bad.stream_sequence)
    assert headers[H_SUBJECT] == store.subject("bad")
    original = js.msg_get(
        await jsadmin.get_message(
            client, client.config.nats.stream_name, last_by_subj=store.subject("bad")
        )
    ).message
    assert original is not None
    assert dlq.data == original.data
    # Terminated: nothing is pending and the floor moved past it.
    assert checkpoint == 4


async def test_a_slow_handler_keeps_its_commit_with_in_progress_acks(
    client: angzarr_es.Client,
) -> None:
    async def slow(d: Delivery) -> None:
        await asyncio.sleep(2.2)  # the work itself: longer than ack_wait (0.6 s)

    await append_many(client, ["a"], 1)
    seen = Recorder(slow)
    async with client.projector("proj", filters.domain("player"), seen, ack_wait=0.6) as p:
        await p.wait(lambda s: s.handled == 1, timeout=10)
    raw = await jsadmin.consumer_info(client, client.config.nats.stream_name, "proj")
    info = msgspec.json.decode(raw)
    assert info["num_redelivered"] == 0
    assert info["delivered"]["consumer_seq"] == 1  # delivered exactly once
    assert info["ack_floor"]["stream_seq"] == 1
    assert [d.delivery_count for d in seen.seen] == [1]


async def test_per_aggregate_order_holds_under_concurrency_and_retries(
    client: angzarr_es.Client,
) -> None:
    rng = random.Random(4)
    roots = [f"agg{i}" for i in range(6)]
    per_root = 8
    await append_many(client, roots, per_root)
    running: set[str] = set()
    peak = 0
    violations: list[str] = []
    flaky = {(r, s) for r in roots for s in range(per_root) if rng.random() < 0.15}

    async def work(d: Delivery) -> None:
        nonlocal peak
        if d.root in running:
            violations.append(f"{d.root} ran twice at once")
        running.add(d.root)
        peak = max(peak, len(running))
        try:
            await asyncio.sleep(rng.uniform(0, 0.01))  # the handler's work
            if (d.root, d.events[0].sequence) in flaky and d.delivery_count == 1:
                raise RuntimeError("transient")
        finally:
            running.discard(d.root)

    seen = Recorder(work)
    async with client.projector(
        "proj", filters.domain("player"), seen, concurrency=4, backoff=(0.02,)
    ) as p:
        await p.wait(lambda s: s.handled == len(roots) * per_root, timeout=WAIT)
    assert flaky, "the seed should make some deliveries fail"
    assert violations == []
    assert 1 < peak <= 4
    # Each aggregate's successful handling happened in order, every commit once.
    done: dict[str, list[int]] = defaultdict(list)
    for d in seen.seen:
        failed_here = (d.root, d.events[0].sequence) in flaky and d.delivery_count == 1
        if not failed_here:
            done[d.root].append(d.events[0].sequence)
        else:
            assert done[d.root] == list(range(d.events[0].sequence))
    assert done == {r: list(range(per_root)) for r in roots}


async def test_two_processes_share_one_durable(bus_config: Config) -> None:
    """Two connections (as two processes would) run the same projector: each commit
    is handled exactly once, by one of them, and both take part."""
    roots = [f"r{i}" for i in range(20)]
    in_flight: set[int] = set()
    overlaps: list[int] = []

    progress = Recorder()  # woken by either process

    async def work(d: Delivery) -> None:
        progress.notify()
        if d.stream_sequence in in_flight:
            overlaps.append(d.stream_sequence)
        in_flight.add(d.stream_sequence)
        await asyncio.sleep(0.002)  # the handler's work
        in_flight.discard(d.stream_sequence)

    one, two = Recorder(work), Recorder(work)
    async with (
        await angzarr_es.connect(config=bus_config) as c1,
        await angzarr_es.connect(config=bus_config) as c2,
    ):
        await c1.provision()
        async with (
            c1.projector("shared", filters.domain("player"), one, concurrency=2),
            c2.projector("shared", filters.domain("player"), two, concurrency=2),
        ):
            await append_many(c1, roots, 5)
            await progress.wait_for(lambda: len(one.seen) + len(two.seen) >= 100)
        assert await jsadmin.consumer_names(c1, bus_config.nats.stream_name) == ["shared"]
        await jsadmin.delete_stream(c1, bus_config.nats.stream_name)
        await delete_dlq(c1)
    seqs = [d.stream_sequence for d in one.seen + two.seen]
    assert sorted(seqs) == list(range(1, 101))
    assert one.seen
    assert two.seen
    assert overlaps == []


async def test_partitions_keep_each_aggregate_in_order_across_processes(
    bus_config: Config,
) -> None:
    roots = [f"r{i}" for i in range(12)]
    async with (
        await angzarr_es.connect(config=bus_config) as c1,
        await angzarr_es.connect(config=bus_config) as c2,
    ):
        await c1.provision()
        one, two = Recorder(), Recorder()
        async with (
            c1.projector(
                "part", filters.domain("player"), one, partition=(0, 2), concurrency=3
            ) as p1,
            c2.projector(
                "part", filters.domain("player"), two, partition=(1, 2), concurrency=3
            ) as p2,
        ):
            await append_many(c1, roots, 4)
            await p1.wait(lambda s: s.handled + s.skipped == 48, timeout=WAIT)
            await p2.wait(lambda s: s.handled + s.skipped == 48, timeout=WAIT)
        names = sorted(await jsadmin.consumer_names(c1, bus_config.nats.stream_name))
        await jsadmin.delete_stream(c1, bus_config.nats.stream_name)
        await delete_dlq(c1)
    assert names == ["part-0of2", "part-1of2"]
    by_one, by_two = sequences_by_root(one.seen), sequences_by_root(two.seen)
    assert not set(by_one) & set(by_two), "an aggregate was handled by both partitions"
    assert {**by_one, **by_two} == {r: [0, 1, 2, 3] for r in roots}
    assert by_one
    assert by_two


async def test_restart_resumes_at_the_checkpoint(client: angzarr_es.Client) -> None:
    await append_many(client, ["a", "b"], 5)
    first = Recorder()
    async with client.projector("proj", filters.domain("player"), first) as p:
        await p.wait(lambda s: s.handled == 10, timeout=WAIT)
    store = client.store("player")
    for i in range(5, 8):
        await store.append("a", [deposit(i)], expected=i)
    second = Recorder()
    async with client.projector("proj", filters.domain("player"), second) as p:
        await p.wait(lambda s: s.handled == 3, timeout=WAIT)
        assert await jsadmin.consumer_names(client, client.config.nats.stream_name) == ["proj"]
    assert [d.stream_sequence for d in first.seen] == list(range(1, 11))
    assert [d.stream_sequence for d in second.seen] == [11, 12, 13]
    assert await p.checkpoint() == 13


async def test_new_projectors_and_resets_start_where_asked(client: angzarr_es.Client) -> None:
    store = client.store("player")
    for i in range(3):
        await store.append("a", [deposit(i)], expected=i)
    middle = dt.datetime.now(dt.UTC)
    for i in range(3, 6):
        await store.append("a", [deposit(i)], expected=i)
    from_seq, from_time, replay = Recorder(), Recorder(), Recorder()
    async with client.projector("s", filters.everything(), from_seq, start=5) as p:
        await p.wait(lambda s: s.handled == 2, timeout=WAIT)
    async with client.projector("t", filters.everything(), from_time, start=middle) as p:
        await p.wait(lambda s: s.handled == 3, timeout=WAIT)
    async with client.projector("r", filters.everything(), replay) as p:
        await p.wait(lambda s: s.handled == 6, timeout=WAIT)
        await p.reset(2)
        await p.wait(lambda s: s.handled == 11, timeout=WAIT)
        await p.reset("all")
        await p.wait(lambda s: s.handled == 17, timeout=WAIT)
    await p.reset(middle)  # not running: recreated, not started
    assert not p.running
    assert [d.stream_sequence for d in from_seq.seen] == [5, 6]
    assert [d.stream_sequence for d in from_time.seen] == [4, 5, 6]
    seqs = [d.stream_sequence for d in replay.seen]
    assert seqs == [1, 2, 3, 4, 5, 6, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6]
    await p.delete()
    assert "r" not in await jsadmin.consumer_names(client, client.config.nats.stream_name)


async def test_a_projector_takes_its_settings_from_its_config_entry(bus_config: Config) -> None:
    """A review found the configured consumer rewritten with the call's defaults
    (and the configured backoff never used)."""
    spec = ConsumerSpec(
        name="player-projector",
        filter=f"{bus_config.nats.subject_prefix}.events.player.*",
        max_deliver=3,
        ack_wait=10.0,
        backoff=[0.5],
        max_ack_pending=50,
    )
    cfg = with_nats(bus_config, consumers=[spec])
    async with await angzarr_es.connect(config=cfg) as c:
        await c.provision()
        await c.bus.provision()
        async with c.projector("player-projector", filters.domain("player"), Recorder()) as p:
            s = p.settings
            assert (s.max_deliver, s.ack_wait, s.backoff, s.max_ack_pending) == (
                3,
                10.0,
                (0.5,),
                50,
            )
            raw = await jsadmin.consumer_info(c, cfg.nats.stream_name, "player-projector")
            info = msgspec.json.decode(raw)["config"]
            assert (info["max_deliver"], info["ack_wait"], info["max_ack_pending"]) == (
                3,
                10 * 10**9,
                50,
            )
        # An argument still wins; other names keep the defaults.
        other = c.projector("other", filters.domain("player"), Recorder(), max_deliver=7)
        assert (other.settings.max_deliver, other.settings.backoff) == (7, (1.0, 5.0, 15.0, 30.0))
        await delete_dlq(c)
        await jsadmin.delete_stream(c, cfg.nats.stream_name)


async def test_a_projector_named_alone_needs_a_configured_filter(
    client: angzarr_es.Client,
) -> None:
    with pytest.raises(angzarr_es.ConfigError, match=r"no filter.*\[\[bus\.nats\.consumers\]\]"):
        client.projector("unconfigured", Recorder())
    with pytest.raises(TypeError, match="needs a handler"):
        client.projector("unconfigured", filters.domain("player"))  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="a filter must be"):
        client.projector("unconfigured", Recorder(), Recorder())  # type: ignore[call-overload]


async def test_provisioning_is_idempotent_and_refuses_conflicts(bus_config: Config) -> None:
    specs = [
        ConsumerSpec(
            name="player-projector", filter=f"{bus_config.nats.subject_prefix}.events.player.*"
        ),
        ConsumerSpec(
            name="hand-projector",
            filter=f"{bus_config.nats.subject_prefix}.events.hand.>",
            max_deliver=3,
        ),
    ]
    cfg = with_nats(bus_config, consumers=specs)
    stream = cfg.nats.stream_name
    async with await angzarr_es.connect(config=cfg) as c:
        await c.provision()
        planned = await c.plan_provision(bus=True)
        assert [(p.name, p.action) for p in planned.consumers] == [
            ("player-projector", "create"),
            ("hand-projector", "create"),
        ]
        await c.bus.provision()
        await c.bus.provision()  # idempotent
        planned = await c.plan_provision(bus=True)
        assert [p.action for p in planned.consumers] == ["none", "none"]
        assert sorted(await jsadmin.consumer_names(c, stream)) == [
            "hand-projector",
            "player-projector",
        ]
        info = msgspec.json.decode(await jsadmin.consumer_info(c, stream, "hand-projector"))
        assert info["config"]["max_deliver"] == 3
        assert info["config"]["ack_policy"] == "explicit"
        # An updatable setting is updated in place ...
        async with c.projector(
            "player-projector", filters.domain("player"), Recorder(), ack_wait=7.0
        ):
            pass
        info = msgspec.json.decode(await jsadmin.consumer_info(c, stream, "player-projector"))
        assert info["config"]["ack_wait"] == 7 * 10**9
        # ... and the plan says provisioning would bring it back to its entry.
        player = (await c.plan_provision(bus=True)).consumers[0]
        assert (player.action, player.changes) == (
            "update",
            {"ack_wait": "7000000000 -> 30000000000"},
        )
        # ... a conflicting definition is refused, naming what differs.
        with pytest.raises(ConsumerConfigError, match="filter_subject"):
            async with c.projector("player-projector", filters.domain("hand"), Recorder()):
                pass
        # a consumer made by someone else, without acks, is not taken over
        body = msgspec.json.encode(
            {"stream_name": stream, "config": {"durable_name": "other", "ack_policy": "none"}}
        )
        await jsadmin.create_consumer(c, stream, "other", body)
        with pytest.raises(ConsumerConfigError, match="ack_policy"):
            async with c.projector("other", filters.everything(), Recorder()):
                pass
        await jsadmin.delete_stream(c, stream)
        await delete_dlq(c)


async def test_stop_drains_in_flight_handlers_and_leaks_nothing(client: angzarr_es.Client) -> None:
    release = asyncio.Event()

    async def blocking(d: Delivery) -> None:
        await release.wait()

    await append_many(client, ["a", "b", "c"], 2)
    subs_before = client.subscription_count
    tasks_before = len(asyncio.all_tasks())
    seen = Recorder(blocking)
    p = client.projector("proj", filters.domain("player"), seen, concurrency=2)
    async with p:
        await seen.wait_count(2)  # two handlers in flight, four commits waiting
        stopping = asyncio.create_task(p.stop())
        await asyncio.sleep(0)  # let stop() begin: it must wait for the handlers
        assert not stopping.done()
        release.set()
        await stopping
    assert p.stats.handled == 2  # the in-flight ones finished and were acked
    assert client.subscription_count == subs_before
    assert len(asyncio.all_tasks()) == tasks_before
    raw = await jsadmin.consumer_info(client, client.config.nats.stream_name, "proj")
    info = msgspec.json.decode(raw)
    assert info["num_ack_pending"] == 4  # handed back (NAK), awaiting redelivery
    assert info["ack_floor"]["stream_seq"] == 2
    # The four commits handed back are picked up by the next run, none lost.
    rest = Recorder()
    async with client.projector("proj", filters.domain("player"), rest, concurrency=2) as p2:
        await p2.wait(lambda s: s.handled == 4, timeout=WAIT)
    handled = {d.stream_sequence for d in seen.seen[:2]} | {d.stream_sequence for d in rest.seen}
    assert handled == set(range(1, 7))


async def test_a_drain_longer_than_ack_wait_keeps_its_commits(client: angzarr_es.Client) -> None:
    """stop() waits for a running handler; meanwhile the in-progress acks go
    on, so a second process on the same durable gets nothing twice (it got
    the running commit 0.8 s into a drain before)."""
    release = asyncio.Event()

    async def slow(d: Delivery) -> None:
        await release.wait()

    await append_many(client, ["a"], 1)
    a, b = Recorder(slow), Recorder()
    pa = client.projector("proj", filters.domain("player"), a, ack_wait=0.6)
    await pa.start()
    await a.wait_count(1)
    async with client.projector("proj", filters.domain("player"), b, ack_wait=0.6):
        stopping = asyncio.create_task(pa.stop())
        # Three times ack_wait: without in-progress acks B would get it.
        with pytest.raises(TimeoutError):
            await b.wait_count(1, timeout=1.8)
        release.set()
        await stopping
    assert pa.stats.handled == 1
    assert [d.delivery_count for d in a.seen] == [1]
    assert b.seen == []


async def test_commits_on_their_last_delivery_are_handled_when_stopping(
    client: angzarr_es.Client,
) -> None:
    """With max_deliver=1 every commit in hand is on its last delivery: it
    cannot be handed back, so stop() handles it (in the drain) instead of
    leaving it to expire, which lost it when no projector was running."""
    release = asyncio.Event()

    async def gated(d: Delivery) -> None:
        await release.wait()

    await append_many(client, ["a", "b", "c"], 2)
    seen = Recorder(gated)
    p = client.projector("proj", filters.domain("player"), seen, max_deliver=1)
    await p.start()
    await seen.wait_count(1)  # one running (concurrency 1) ...

    await eventually(
        lambda: until(p.in_hand == 6),
        timeout=WAIT,
        what="five more commits in hand",
    )
    stopping = asyncio.create_task(p.stop())
    await asyncio.sleep(0)  # let stop() begin, then let the handlers run
    release.set()
    await stopping
    assert p.stats.handled == 6
    assert p.stats.dead_lettered == 0
    assert sorted(d.stream_sequence for d in seen.seen) == list(range(1, 7))
    assert sequences_by_root(seen.seen) == {"a": [0, 1], "b": [0, 1], "c": [0, 1]}
    assert await p.checkpoint() == 6


async def test_a_handler_can_stop_its_projector(client: angzarr_es.Client) -> None:
    holder: list[angzarr_es.Projector] = []
    stopped = asyncio.Event()

    async def stop_on_first(d: Delivery) -> None:
        await holder[0].stop(drain_timeout=10)  # waited for itself, then cancelled itself
        stopped.set()

    await append_many(client, ["a"], 3)
    seen = Recorder(stop_on_first)
    holder.append(client.projector("proj", filters.domain("player"), seen))
    await holder[0].start()
    await asyncio.wait_for(stopped.wait(), 5)
    assert not holder[0].running
    await holder[0].wait(lambda s: s.handled == 1, timeout=5)  # its own commit is acked
    assert len(seen.seen) == 1

    async def acked() -> bool | None:
        return True if await holder[0].checkpoint() == 1 else None

    await eventually(acked, timeout=WAIT, what="the ack of the handler's own commit")


async def test_unlimited_max_ack_pending_still_pulls(client: angzarr_es.Client) -> None:
    await append_many(client, ["a"], 3)
    seen = Recorder()
    async with client.projector("proj", filters.domain("player"), seen, max_ack_pending=-1) as p:
        await p.wait(lambda s: s.handled == 3, timeout=WAIT)


async def test_a_consumer_deleted_under_a_running_projector_is_reported(
    client: angzarr_es.Client,
) -> None:
    await append_many(client, ["a"], 1)
    seen = Recorder()
    async with client.projector("proj", filters.domain("player"), seen) as p:
        await p.wait(lambda s: s.handled == 1, timeout=WAIT)
        stream = client.config.nats.stream_name
        await jsadmin.delete_consumer(client, stream, "proj")
        with pytest.raises(angzarr_es.StoreError, match="deleted"):
            await p.wait(lambda s: s.handled == 2, timeout=WAIT)
        assert not p.running
        # As the log says: reset() (or stop and start) brings it back.
        await p.reset("all")
        assert p.running
        await client.store("player").append("a", [deposit(1)], expected=1)
        await p.wait(lambda s: s.handled == 3, timeout=WAIT)  # commit 1 again, then 2


async def test_starting_on_a_missing_stream_creates_nothing(bus_config: Config) -> None:
    async with await angzarr_es.connect(config=bus_config) as c:  # nothing provisioned
        p = c.projector("proj", filters.domain("player"), Recorder())
        with pytest.raises(angzarr_es.StoreError):
            await p.start()
        assert not p.running
        info = await jsadmin.stream_info(c, bus_config.nats.dlq_stream)
        assert b"stream not found" in info


async def test_in_hand_counts_what_every_lane_holds(bus_config: Config) -> None:
    """In the per-domain layout a projector spanning domains runs one lane per
    domain stream: `in_hand` is theirs together."""
    cfg = with_nats(bus_config, stream_layout="per-domain")
    release = asyncio.Event()

    async def held(d: Delivery) -> None:
        await release.wait()

    async with await angzarr_es.connect(config=cfg) as c:
        try:
            for domain in ("player", "table"):
                await c.store(domain).append(uuid.uuid4(), [deposit(0)], expected=0)
            async with c.projector("lanes", filters.everything(), Recorder(held)) as p:
                await eventually(
                    lambda: until(p.in_hand == 2), timeout=WAIT, what="a commit in each lane"
                )
                release.set()
                await p.wait(lambda s: s.handled == 2, timeout=WAIT)
                assert p.in_hand == 0
        finally:
            release.set()
            await jsadmin.delete_layout_streams(c, cfg)
            await delete_dlq(c)


async def test_after_the_drain_time_nothing_runs_on(client: angzarr_es.Client) -> None:
    """A handler past drain_timeout is cancelled; its cancellation must not
    start the aggregate's next commit (which then ran after stop() returned)."""
    hang = asyncio.Event()
    started: list[int] = []

    async def first_hangs(d: Delivery) -> None:
        started.append(d.stream_sequence)
        await hang.wait()

    await append_many(client, ["a"], 3)
    p = client.projector("proj", filters.domain("player"), Recorder(first_hangs), max_deliver=1)
    await p.start()

    await eventually(
        lambda: until(p.in_hand == 3 and bool(started)),
        timeout=WAIT,
        what="three commits in hand",
    )
    await p.stop(drain_timeout=0.3)
    assert started == [1]
    assert not [t for t in asyncio.all_tasks() if p.runs(t)]  # no handler left
    # Last deliveries that could not run are dead-lettered, never dropped.
    assert p.stats.dead_lettered == 3
    # No handler is counted running either: a restart has its whole concurrency.
    hang.set()
    await client.store("player").append("a", [deposit(3)], expected=3)
    async with p:
        await eventually(lambda: until(started == [1, 4]), timeout=WAIT, what="a:#4 handled")


async def test_reset_from_a_handler_replays_that_handler_s_commit(
    client: angzarr_es.Client,
) -> None:
    calls: list[int] = []
    holder: list[angzarr_es.Projector] = []

    async def reset_once(d: Delivery) -> None:
        calls.append(d.stream_sequence)
        if len(calls) == 1:
            p = holder[0]
            await p.reset("all")

            # Still running when the new consumer delivers this commit again:
            # it was taken for the old delivery, acked by this call, and
            # never replayed. (The stop handed back or detached all it held,
            # and the replay delivers in order: the first in hand is #1.)
            await eventually(
                lambda: until(p.in_hand >= 1),
                timeout=WAIT,
                what="the replay's first delivery",
            )

    await append_many(client, ["a"], 2)
    holder.append(client.projector("proj", filters.domain("player"), reset_once))
    async with holder[0] as p:
        await p.wait(lambda s: s.handled >= 3, timeout=WAIT)
    assert calls[:1] == [1]
    assert sorted(calls[1:]) == [1, 2]  # the replay includes the commit that reset


async def test_reset_from_a_handler_of_the_only_commit_neither_stalls_nor_acks_early(
    client: angzarr_es.Client,
) -> None:
    """One commit: the old handler's cleanup removed the new run's bookkeeping
    for the aggregate (the replay then sat in hand for ever), and its ack
    settled the new consumer's replay on the server before it was handled."""
    calls: list[int] = []
    floors: list[int] = []
    holder: list[angzarr_es.Projector] = []

    async def reset_once(d: Delivery) -> None:
        calls.append(d.stream_sequence)
        if len(calls) == 1:
            p = holder[0]
            await p.reset("all")

            await eventually(
                lambda: until(p.in_hand == 1 or len(calls) > 1),
                timeout=WAIT,
                what="the replay's delivery",
            )
            floors.append(await p.checkpoint())

    await append_many(client, ["a"], 1)
    holder.append(client.projector("proj", filters.domain("player"), reset_once))
    async with holder[0] as p:
        await p.wait(lambda s: s.handled >= 2, timeout=WAIT)
        await client.store("player").append("a", [deposit(1)], expected=1)
        await p.wait(lambda s: s.handled >= 3, timeout=WAIT)
    assert calls == [1, 1, 2]
    assert floors == [0]  # the old handler's return acked nothing of the replay


async def test_a_wide_filter_skips_correlation_entries_instead_of_dead_lettering(
    client: angzarr_es.Client,
) -> None:
    """`<prefix>.>` also matches the correlation index: its entries were
    handled as broken commits, retried and dead-lettered (a review)."""
    prefix = client.config.nats.subject_prefix
    await client.store("player").append("a", [deposit(1)], expected=0, correlation_id="wf-1")
    seen = Recorder()
    async with client.projector("wide", f"{prefix}.>", seen, max_deliver=2, backoff=(0.1,)) as p:
        await p.wait(lambda s: s.handled == 1 and s.skipped == 1, timeout=WAIT)
        stats = p.stats
    assert (stats.failed, stats.dead_lettered) == (0, 0)
    assert [d.root for d in seen.seen] == ["a"]


async def test_a_restart_after_a_stop_from_a_handler_keeps_the_aggregate_s_order(
    client: angzarr_es.Client,
) -> None:
    """The handler of a:#1 stops the projector and a supervisor starts it again
    while that call still runs: a:#2 waits for it (it overlapped before)."""
    holder: list[angzarr_es.Projector] = []
    log: list[str] = []
    stopped, finish = asyncio.Event(), asyncio.Event()

    async def handle(d: Delivery) -> None:
        log.append(f"start {d.stream_sequence}")
        if d.stream_sequence == 1:
            await holder[0].stop()
            stopped.set()
            await finish.wait()
        log.append(f"end {d.stream_sequence}")

    await append_many(client, ["a"], 2)
    p = client.projector("proj", filters.domain("player"), handle, concurrency=2)
    holder.append(p)
    try:
        await p.start()
        await asyncio.wait_for(stopped.wait(), WAIT)
        await p.start()  # the supervisor, while a:#1 still runs

        await eventually(
            lambda: until(p.in_hand >= 1 or "start 2" in log),
            timeout=WAIT,
            what="a:#2 handed back and delivered again",
        )
        finish.set()
        await p.wait(lambda s: s.handled >= 2, timeout=WAIT)
    finally:
        # A failure above must not leave a handler parked on `finish` under a
        # running projector (the run that failed here then hung the suite).
        finish.set()
        await p.stop()
    assert log[:3] == ["start 1", "end 1", "start 2"], log


async def test_a_reset_to_a_bad_start_changes_nothing(client: angzarr_es.Client) -> None:
    await append_many(client, ["a"], 1)
    async with client.projector("proj", filters.domain("player"), Recorder()) as p:
        await p.wait(lambda s: s.handled == 1, timeout=WAIT)
        with pytest.raises(ValueError, match="start"):
            await p.reset(0)
        assert p.running
        assert p.settings.start == "all"

        async def acked() -> int | None:
            # The ack is fire-and-forget and the server applies it on its own
            # goroutine, so the ack floor follows `handled` a moment later.
            return 1 if await p.checkpoint() == 1 else None

        await eventually(acked, timeout=WAIT, what="the ack floor at 1")


async def test_in_progress_acks_go_on_while_a_deleted_consumer_is_checked(
    client: angzarr_es.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A 409 "Consumer Deleted" is checked with a consumer info request; while
    that request cannot be answered, the running commit must stay ours."""
    release = asyncio.Event()

    async def slow(d: Delivery) -> None:
        await release.wait()

    async def unanswered(request: Request, forward: Forward) -> Reply:
        if faults.operation(request) == "CONSUMER.INFO":
            raise angzarr_es.StoreTimeout(f"{request.what}: no answer from NATS in time")
        return await forward(request)

    await append_many(client, ["a"], 1)
    a, b = Recorder(slow), Recorder()
    pa = client.projector("proj", filters.domain("player"), a, ack_wait=0.6)
    await pa.start()
    await a.wait_count(1)
    async with client.projector("proj", filters.domain("player"), b, ack_wait=0.6):
        with faults.intercept(client, on_request=unanswered):
            # As a cluster sends it when the consumer moves (to both projectors' pulls).
            assert await faults.pull_status(client, "proj", "409", "Consumer Deleted") == 2
            with pytest.raises(TimeoutError):
                await b.wait_count(1, timeout=1.8)  # three times ack_wait
        assert "is consumer proj still there?" in caplog.text  # the check was made
        release.set()
        await pa.wait(lambda s: s.handled == 1, timeout=WAIT)
        await pa.stop()
    assert b.seen == []
    assert pa.stats.handled == 1


async def test_a_handler_can_stop_its_projector_through_wait_for(
    client: angzarr_es.Client,
) -> None:
    holder: list[angzarr_es.Projector] = []
    stopped = asyncio.Event()

    async def stop_on_first(d: Delivery) -> None:
        await asyncio.wait_for(holder[0].stop(drain_timeout=10), 5)  # a task of its own
        stopped.set()

    await append_many(client, ["a"], 2)
    holder.append(client.projector("proj", filters.domain("player"), Recorder(stop_on_first)))
    await holder[0].start()
    await asyncio.wait_for(stopped.wait(), 8)
    assert not holder[0].running


def test_settings_are_checked(config: Config) -> None:
    from angzarr_es.bus import ProjectorSettings

    cases: list[dict[str, object]] = [
        {"name": "a.b"},
        {"max_deliver": 0},
        {"ack_wait": 0},
        {"concurrency": 0},
        {"backoff": (-1.0,)},
        {"partition": (2, 2)},
        {"start": 0},
    ]
    for bad in cases:
        settings = ProjectorSettings(name="p", subject="x.events.>")
        with pytest.raises(ValueError, match="must"):
            msgspec.structs.replace(settings, **bad).check()
    settings = ProjectorSettings(name="p", subject="x.events.>")
    # Found by a review: accepted, or refused only by the server at start.
    with pytest.raises(ValueError, match="at most 255"):
        msgspec.structs.replace(settings, name="p" * 250, partition=(0, 12)).check()
    for key, value in (("concurrency", 2.5), ("max_deliver", True), ("max_ack_pending", "9")):
        with pytest.raises(TypeError, match=f"{key} must be an int"):
            msgspec.structs.replace(settings, **{key: value}).check()


async def test_a_commit_whose_last_delivery_expires_is_dead_lettered(
    client: angzarr_es.Client,
) -> None:
    """A process that takes a commit and dies (never acks) on its last delivery: the
    server gives up by itself and the running projector dead-letters the commit
    from the server's MAX_DELIVERIES advisory."""
    await append_many(client, ["lost"], 1)
    seen = Recorder()
    # The consumer made beforehand, as a deployment makes it (`provision`).
    spec = ConsumerSpec(
        name="proj", filter=client.bus.filter(filters.domain("player")), max_deliver=2, ack_wait=0.4
    )
    async with await angzarr_es.connect(config=with_nats(client.config, consumers=[spec])) as ops:
        await ops.bus.provision()
    p = client.projector("proj", filters.domain("player"), seen, max_deliver=2, ack_wait=0.4)
    stream = client.config.nats.stream_name
    steal = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.proj"
    async with jsadmin.admin(client) as nc:  # the process that dies
        inbox = nc.new_inbox()
        thief = await nc.subscribe(inbox)
        await nc.publish(steal, b'{"batch": 1, "no_wait": true}', reply=inbox)
        first = await thief.next_msg(timeout=2)
        await nc.publish(steal, b'{"batch": 1, "expires": 3000000000}', reply=inbox)
        second = await thief.next_msg(timeout=4)
    assert first.reply.split(".")[4:6] == ["1", "1"]  # delivery 1 of stream seq 1
    assert second.reply.split(".")[4:6] == ["2", "1"]  # delivery 2: the last
    async with p:
        await p.wait(lambda s: s.dead_lettered == 1, timeout=WAIT)
    assert seen.seen == []
    dlq = await jsadmin.direct_get_last(
        client, client.config.nats.dlq_stream, f"{client.config.nats.subject_prefix}.dlq.player"
    )
    headers = dlq.headers or {}
    assert headers[H_DELIVERIES] == "2"
    assert headers[H_ERROR].startswith("MaxDeliveriesExceeded")
    assert headers[H_STREAM_SEQ] == "1"


async def test_a_partition_has_one_active_process_and_a_standby_takes_over(
    bus_config: Config,
) -> None:
    """Two processes on the same partition: one is pinned and handles it, the other
    waits; when the first stops, the standby takes over where it left off."""
    roots = [f"r{i}" for i in range(8)]
    async with (
        await angzarr_es.connect(config=bus_config) as c1,
        await angzarr_es.connect(config=bus_config) as c2,
    ):
        await c1.provision()
        rec = {c1: Recorder(), c2: Recorder()}
        ps = [c.projector("part", filters.domain("player"), rec[c], partition=(0, 1)) for c in rec]
        for p in ps:
            await p.start()
        await append_many(c1, roots, 2)
        waits = [asyncio.create_task(p.wait(lambda s: s.handled == 16)) for p in ps]
        done, pending = await asyncio.wait(waits, timeout=WAIT, return_when="FIRST_COMPLETED")
        for task in pending:
            task.cancel()
        assert done
        pinned, standby = ps if ps[0].stats.handled else ps[::-1]
        assert (pinned.stats.handled, standby.stats.handled) == (16, 0)
        await pinned.stop()  # unpins: the standby takes over at once
        await append_many_from(c1, roots, 2, 2)
        await standby.wait(lambda s: s.handled == 16, timeout=WAIT)
        assert pinned.stats.handled == 16
        await standby.stop()
        await jsadmin.delete_stream(c1, bus_config.nats.stream_name)
        await delete_dlq(c1)
    first, then = (rec[c1], rec[c2]) if pinned is ps[0] else (rec[c2], rec[c1])
    assert [d.stream_sequence for d in first.seen] == list(range(1, 17))
    assert [d.stream_sequence for d in then.seen] == list(range(17, 33))


async def append_many_from(
    client: angzarr_es.Client, roots: list[str], start: int, per_root: int
) -> None:
    store = client.store("player")
    for i in range(start, start + per_root):
        for root in roots:
            await store.append(root, [deposit(i)], expected=i)


async def test_closing_the_client_stops_its_projectors_and_subscriptions(
    bus_config: Config,
) -> None:
    """They ran on after close(): their tasks died with the loop ("Task was
    destroyed but it is pending") and `running` stayed True (a review)."""
    started, release = asyncio.Event(), asyncio.Event()
    handled: list[int] = []

    async def slow(d: Delivery) -> None:
        started.set()
        await release.wait()
        handled.append(d.stream_sequence)

    client = await angzarr_es.connect(config=bus_config)
    await client.provision()
    await append_many(client, ["a"], 1)
    p = client.projector("closing", filters.domain("player"), slow)
    await p.start()
    sub = client.subscribe(filters.domain("player"))
    await sub.open()
    await asyncio.wait_for(started.wait(), WAIT)
    closing = asyncio.create_task(client.close())
    await asyncio.sleep(0)  # close() is now waiting for the running handler
    release.set()
    await asyncio.wait_for(closing, WAIT)
    assert not p.running
    assert handled == [1]  # the running handler finished (and was acked)
    assert [d async for d in sub] == []  # the subscription ended with the client
    async with await angzarr_es.connect(config=bus_config) as other:
        assert await jsadmin.consumer_names(other, bus_config.nats.stream_name) == ["closing"]

        async def acked() -> int | None:
            # The ack is fire-and-forget; the server applies it a moment later.
            floor = await _ack_floor(other, bus_config.nats.stream_name, "closing")
            return floor if floor == 1 else None

        await eventually(acked, timeout=WAIT, what="the ack floor at 1")
        await delete_dlq(other)
        await jsadmin.delete_stream(other, bus_config.nats.stream_name)


async def _ack_floor(c: angzarr_es.Client, stream: str, name: str) -> int:
    raw = await jsadmin.consumer_info(c, stream, name)
    floor: int = msgspec.json.decode(raw)["ack_floor"]["stream_seq"]
    return floor


@pytest.mark.parametrize("how", ["stop_then_close", "close_from_handler", "cancelled_close"])
async def test_closing_the_client_lets_running_handlers_ack(bus_config: Config, how: str) -> None:
    """A review: close() closed the connection under a handler that a stop()
    from a handler had left running, or under the handler that called it, so
    its ack was lost; a cancelled close() left the connection open."""
    stream = bus_config.nats.stream_name
    release = asyncio.Event()
    in_handler = asyncio.Event()
    client = await angzarr_es.connect(config=bus_config)
    await client.provision()
    await append_many(client, ["a"], 1)
    holder: list[angzarr_es.Projector] = []

    async def handle(d: Delivery) -> None:
        in_handler.set()
        if how == "stop_then_close":
            await holder[0].stop()  # returns at once: this handler runs on
        elif how == "close_from_handler":
            await client.close()  # returns; the connection closes after our ack
            assert not client.closed
        await release.wait()

    p = client.projector(f"closing-{how}".replace("_", "-"), filters.domain("player"), handle)
    holder.append(p)
    await p.start()
    await asyncio.wait_for(in_handler.wait(), WAIT)
    if how == "cancelled_close":
        closing = asyncio.create_task(client.close())
        await eventually(lambda: until(not p.running), timeout=WAIT, what="the stop under way")
        closing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await closing
        assert client.closed  # closed in spite of the cancel
    else:
        closing = asyncio.create_task(client.close())
        release.set()
        await asyncio.wait_for(closing, WAIT)
        await eventually(lambda: until(client.closed), timeout=WAIT, what="the connection closed")
    release.set()
    async with await angzarr_es.connect(config=bus_config) as other:
        if how != "cancelled_close":

            async def acked() -> int | None:
                return 1 if await _ack_floor(other, stream, p.settings.durable) == 1 else None

            await eventually(acked, timeout=WAIT, what="the handler's ack")
        await delete_dlq(other)
        await jsadmin.delete_stream(other, stream)


async def test_closing_the_client_closes_its_bus_subscriptions_quietly(
    bus_config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    """bus.subscribe's subscription died with an ERROR and a traceback when its
    client closed, and left its consumer behind (a review)."""
    client = await angzarr_es.connect(config=bus_config)
    await client.provision()
    seen = Recorder()
    await client.bus.subscribe(filters.domain("player"), seen)
    await append_many(client, ["a"], 1)
    await seen.wait_count(1)
    with caplog.at_level("WARNING", logger="angzarr_es"):
        await client.close()
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    async with await angzarr_es.connect(config=bus_config) as other:
        assert await jsadmin.consumer_names(other, bus_config.nats.stream_name) == []
        await jsadmin.delete_stream(other, bus_config.nats.stream_name)


async def test_a_handler_closes_its_own_temporary_client_at_once(client: angzarr_es.Client) -> None:
    """close() defers only for a handler of the client's own projectors: a
    handler's throwaway client stayed open until the handler returned (a review)."""
    await append_many(client, ["a"], 1)
    closed: list[bool] = []

    async def handle(d: Delivery) -> None:
        async with await angzarr_es.connect(config=client.config) as tmp:
            pass
        closed.append(tmp.closed)

    async with client.projector("tmp-client", filters.domain("player"), handle) as p:
        await p.wait(lambda s: s.handled == 1, timeout=WAIT)
    assert closed == [True]
