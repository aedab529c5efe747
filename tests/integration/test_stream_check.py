"""The store's look at the event stream before a client's first append or read
(issue 19): a stream that can delete events is refused, or warned about; one
without `allow_direct` is read from its leader, never reported as leaderless;
and the look costs one request per client."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

import angzarr_es
from angzarr_es.config import Config
from angzarr_es.pb import player_pb2
from angzarr_es.testing import faults
from angzarr_es.testing.faults import Forward, Reply, Request
from tests.support import jsadmin
from tests.support.configs import fresh_config, with_nats
from tests.support.events import deposit
from tests.support.jsadmin import messages as js

WEEK = 7 * 24 * 3600
# `nats stream add ... --max-age 7d` as angzarr's docs do it: allow_direct off.
ORIGIN_DOCS: dict[str, Any] = {"max_age": WEEK * 10**9}


async def hand_made(client: angzarr_es.Client, **settings: Any) -> None:
    """The event stream (and a snapshot stream) made by hand, not provisioned."""
    nats = client.config.nats
    cfg = js.StreamConfig(
        name=nats.stream_name,
        subjects=[f"{nats.subject_prefix}.events.>", f"{nats.subject_prefix}.correlation.>"],
        **settings,
    )
    for stream in (cfg, await snapshot_stream_config(client)):
        reply = js.api_response(await jsadmin.create_stream(client, stream))
        assert reply.error is None, reply.error


async def snapshot_stream_config(client: angzarr_es.Client) -> angzarr_es.StreamConfig:
    """The snapshot stream as provisioning makes it (the dry run shows it)."""
    plan = await client.plan_provision()
    return next(s.config for s in plan.streams if s.role == "snapshot stream")


async def messages(client: angzarr_es.Client) -> int:
    info = await jsadmin.stream_info_json(client, client.config.nats.stream_name)
    count: int = info["state"]["messages"]
    return count


@pytest.fixture
async def unprovisioned(config: Config) -> AsyncIterator[angzarr_es.Client]:
    """A connected client whose streams the test makes (deleted afterwards)."""
    async with await angzarr_es.connect(config=config) as c:
        yield c
        await jsadmin.delete_stream(c, config.nats.stream_name)
        await jsadmin.delete_stream(c, config.nats.snapshot_stream)


async def test_appends_to_a_stream_that_expires_events_are_refused(
    unprovisioned: angzarr_es.Client, config: Config
) -> None:
    """Appends went into a stream that deletes them after 7 days, and reads
    said "no leader" (allow_direct is off)."""
    client = unprovisioned
    await hand_made(client, **ORIGIN_DOCS)
    players = client.store("player")
    with pytest.raises(angzarr_es.StreamConfigError) as refused:
        await players.append("p", [deposit(1)], expected=0)
    text = str(refused.value)
    assert "max_age: 604800000000000 -> 0" in text
    assert "events older than 604800 s are deleted" in text
    assert "angzarr-es provision" in text
    assert 'stream_check = "warn"' in text
    assert await messages(client) == 0  # nothing was sent
    # Reads work (from the leader), never "no leader".
    assert (await players.load("p")).events == []
    assert await players.next_sequence("p") == 0
    # Provisioned by another process (the CLI): the next append looks again.
    async with await angzarr_es.connect(config=config) as other:
        await other.provision()
    await players.append("p", [deposit(1)], expected=0)
    await players.save_snapshot("p", deposit(1), 0)
    assert [e.sequence for e in (await players.load("p")).events] == [0]


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ({"max_msgs": 1000}, "only the newest 1000 messages are kept"),
        ({"max_bytes": 10**9}, "only the newest 1000000000 bytes are kept"),
        ({"max_msgs_per_subject": 10}, "only the newest 10 commits of each aggregate"),
        ({"discard": "old"}, "the oldest messages are deleted when a limit is reached"),
        ({"storage": "memory"}, "cannot be changed in place"),
        ({"retention": "interest"}, "deleted once consumed"),
    ],
)
async def test_every_setting_that_can_delete_events_is_named(
    unprovisioned: angzarr_es.Client, setting: dict[str, Any], said: str
) -> None:
    await hand_made(unprovisioned, allow_direct=True, **setting)
    key = next(iter(setting))
    with pytest.raises(angzarr_es.StreamConfigError, match=rf"{key}: .* -> ") as refused:
        await unprovisioned.store("player").append("p", [deposit(1)], expected=angzarr_es.ANY)
    assert said in str(refused.value)
    assert await messages(unprovisioned) == 0


async def test_warn_appends_after_one_warning_and_reads_from_the_leader(
    config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = with_nats(config, stream_check="warn")
    async with await angzarr_es.connect(config=cfg) as client:
        try:
            await hand_made(client, **ORIGIN_DOCS)
            players = client.store("player")
            with caplog.at_level(logging.WARNING, logger="angzarr_es"):
                await players.append("p", [deposit(1)], expected=0, correlation_id="wf")
                await players.append("p", [deposit(2), deposit(3)], expected=1)
                hist = await players.load("p")
                seen = [e.sequence async for e in players.iter("p")]
            warned = [r.getMessage() for r in caplog.records]
            assert sum("max_age" in w for w in warned) == 1, warned
            assert sum("allow_direct is off" in w for w in warned) == 1, warned
            assert not [w for w in warned if "no leader" in w]
            assert [e.sequence for e in hist.events] == seen == [0, 1, 2]
            assert hist.next_sequence == 3
            assert await client.has_events("player")
            found = await client.events_by_correlation("wf")
            assert [e.sequence for e in found[("player", "p")]] == [0]
            await players.save_snapshot("p", deposit(9), 1)
            snap = await players.load("p", snapshot=True)
            assert snap.snapshot is not None
            assert [e.sequence for e in snap.events] == [2]
        finally:
            await jsadmin.delete_stream(client, cfg.nats.stream_name)
            await jsadmin.delete_stream(client, cfg.nats.snapshot_stream)


async def test_a_configured_max_age_accepts_a_stream_that_has_it(nats_url: str) -> None:
    config = fresh_config(nats_url, max_age=float(WEEK))
    async with await angzarr_es.connect(config=config) as client:
        try:
            await hand_made(client, allow_direct=True, **ORIGIN_DOCS)
            await client.store("player").append("p", [deposit(1)], expected=0)
        finally:
            await jsadmin.delete_stream(client, config.nats.stream_name)
            await jsadmin.delete_stream(client, config.nats.snapshot_stream)


async def test_a_stream_without_direct_get_is_read_from_its_leader(
    unprovisioned: angzarr_es.Client, config: Config
) -> None:
    await hand_made(unprovisioned)  # keeps every event, allow_direct off
    players = unprovisioned.store("player")
    for n in range(30):
        await players.append(f"p{n % 3}", [deposit(n), deposit(n)], expected=angzarr_es.ANY)
    # A new client reads first: pages of a few hundred bytes, and the tail.
    async with await angzarr_es.connect(config=config) as reader:
        store = reader.store("player")
        hist = await store.load("p1")
        assert [e.sequence for e in hist.events] == list(range(20))
        assert [e.sequence async for e in store.iter("p2", 3, 7)] == [3, 4, 5, 6]
        assert await store.next_sequence("p0") == 20
        assert sorted([r async for r in store.list_roots()]) == ["p0", "p1", "p2"]
        assert not await reader.has_events("hand")


async def test_a_snapshot_stream_without_direct_get_says_so(
    client: angzarr_es.Client,
) -> None:
    """The snapshot stream is not looked at beforehand: its Direct Get fails,
    and the error names allow_direct, not an election."""
    off = msgspec.structs.replace(await snapshot_stream_config(client), allow_direct=False)
    await jsadmin.update_stream(client, off)
    players = client.store("player")
    await players.append("p", [player_pb2.PlayerRegistered(name="a")], expected=0)
    with pytest.raises(angzarr_es.StoreUnavailable, match=r"allow_direct is off.*provision"):
        await players.load("p", snapshot=True)


async def test_the_look_costs_one_request_per_client(
    client: angzarr_es.Client, config: Config
) -> None:
    asked: list[str] = []

    async def counting(request: Request, forward: Forward) -> Reply:
        if faults.operation(request) == "STREAM.INFO":
            asked.append(request.subject.rpartition(".")[2])
        return await forward(request)

    players = client.store("player")
    with faults.intercept(client, on_request=counting):  # provisioned: it knows the stream
        for n in range(10):
            await players.append("p", [deposit(n)], expected=n)
            await players.load("p")
    assert asked == []
    async with await angzarr_es.connect(config=config) as fresh:
        store = fresh.store("player")
        with faults.intercept(fresh, on_request=counting):
            await asyncio.gather(
                *(store.append(f"q{n}", [deposit(n)], expected=0) for n in range(8))
            )
            for n in range(10):
                await store.load("p")
                await store.append("p", [deposit(n)], expected=10 + n)
    assert asked == [config.nats.stream_name]
