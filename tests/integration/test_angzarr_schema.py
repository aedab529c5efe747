"""Books written with angzarr's schema on a real server: loads, iterations,
subscriptions and the hot cache read pending pages and claim checks as
stand-ins; appends go on after them. Type URLs as written and as read."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

import angzarr_es
from angzarr_es import filters
from angzarr_es.codec import RecordedEvent
from angzarr_es.config import Config
from angzarr_es.pb import core_pb2, player_pb2
from angzarr_es.testing import InMemoryClient
from tests.support import jsadmin
from tests.support.angzarr_schema import COORDINATOR, angzarr_book
from tests.support.bus import Recorder
from tests.support.configs import with_nats
from tests.support.events import deposit
from tests.support.jsadmin import messages as js


@pytest.fixture(params=["direct", "consumer", "cached"])
async def reader(
    request: pytest.FixtureRequest, config: Config
) -> AsyncIterator[angzarr_es.Client]:
    cfg = (
        config
        if request.param == "cached"
        else with_nats(config, replay=request.param, cache_bytes=0)
    )
    async with await angzarr_es.connect(config=cfg) as client:
        await client.provision()
        yield client
        await jsadmin.delete_stream(client, cfg.nats.stream_name)


def _check(events: list[RecordedEvent], n: int) -> None:
    assert [e.sequence for e in events] == list(range(n))
    assert events[0].event == player_pb2.FundsDeposited(amount_cents=1)
    assert events[1].external is not None
    assert events[1].external.uri == "s3://payloads/abc.bin"
    assert events[2].pending
    assert isinstance(events[2].event, core_pb2.EventPage)
    assert events[2].event.cascade_id == "cascade-9"
    assert events[3].event == player_pb2.FundsDeposited(amount_cents=4)
    assert not any(e.pending for e in events[3:])


async def test_books_angzarr_wrote_load_with_stand_ins(reader: angzarr_es.Client) -> None:
    store = reader.store("player")
    root = uuid.uuid4()
    ack = await jsadmin.publish(reader, store.subject(root), angzarr_book(COORDINATOR))
    assert ack.error is None
    hist = await store.load(root)
    _check(hist.events, 4)
    assert hist.next_sequence == 4
    assert [e async for e in store.iter(root)] == hist.events
    await store.append(root, [deposit(5)], expected=4)
    again = await store.load(root)  # from the hot cache where it is on
    _check(again.events, 5)
    assert again.events[4].event == deposit(5)
    assert again.events[:4] == hist.events


async def test_a_subscriber_gets_pending_pages_as_stand_ins(client: angzarr_es.Client) -> None:
    seen = Recorder()
    root = uuid.uuid4()
    async with await client.bus.subscribe(filters.domain("player"), seen):
        subject = client.store("player").subject(root)
        ack = await jsadmin.publish(client, subject, angzarr_book(COORDINATOR))
        assert ack.error is None
        await seen.wait_count(1)
    _check(seen.seen[0].events, 4)


async def _stored_type_url(client: angzarr_es.Client, stream: str, subject: str) -> str:
    got = js.msg_get(await jsadmin.get_message(client, stream, last_by_subj=subject)).message
    assert got is not None
    if stream == client.config.nats.snapshot_stream:
        return core_pb2.Snapshot.FromString(got.data).state.type_url
    return core_pb2.EventBook.FromString(got.data).pages[0].event.type_url


async def test_type_urls_default_to_any_packs_and_can_keep_a_slash(
    client: angzarr_es.Client,
) -> None:
    nats = client.config.nats
    slash_cfg = with_nats(client.config, type_url_prefix="/")
    state = player_pb2.PlayerState(name="Ann")
    async with await angzarr_es.connect(config=slash_cfg) as slash:
        for writer, root in ((slash, "old"), (client, "new")):
            store = writer.store("player")
            await store.append(root, [deposit(1)], expected=0)
            await store.save_snapshot(root, state, 0)
        # One aggregate written under both prefixes.
        await slash.store("player").append("mixed", [deposit(0)], expected=0)
        await client.store("player").append("mixed", [deposit(1)], expected=1)
    store = client.store("player")
    expect = {"old": "/", "new": "type.googleapis.com/"}
    for root, prefix in expect.items():
        got = await _stored_type_url(client, nats.stream_name, store.subject(root))
        assert got == prefix + "examples.player.FundsDeposited"
        snapshots = f"{nats.subject_prefix}.snapshots.player.{root}"
        got = await _stored_type_url(client, nats.snapshot_stream, snapshots)
        assert got == prefix + "examples.player.PlayerState"
        hist = await store.load(root, snapshot=True)
        assert hist.snapshot is not None
        assert hist.snapshot.state == state
    async with await angzarr_es.connect(config=client.config) as fresh:
        hist = await fresh.store("player").load("mixed")
    assert [e.event for e in hist.events] == [deposit(0), deposit(1)]
    assert {e.type_name for e in hist.events} == {"examples.player.FundsDeposited"}


@pytest.mark.parametrize("prefix", ["/", "type.googleapis.com/"])
async def test_the_in_memory_store_packs_with_the_configured_prefix(
    config: Config, prefix: str
) -> None:
    memory = InMemoryClient(config=with_nats(config, type_url_prefix=prefix))
    seen = Recorder()
    async with await memory.bus.subscribe(filters.domain("player"), seen):
        await memory.store("player").append("p", [deposit(1)], expected=0)
        await seen.wait_count(1)
    page = seen.seen[0].book.pages[0]
    assert page.event.type_url == prefix + "examples.player.FundsDeposited"
