"""Discovery against a real server at scale: list_roots pages through 200,000+
aggregates holding one page of the subject index at a time."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import tracemalloc
import uuid

import msgspec
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

import angzarr_es
from angzarr_es import codec
from angzarr_es.pb import player_pb2
from angzarr_es.subjects import encode_root
from angzarr_es.testing import faults
from angzarr_es.testing.faults import Forward, Reply, Request
from tests.support import jsadmin

# nats-server sends at most this many subjects per STREAM.INFO page.
SERVER_PAGE = 100_000
BIG = 200_003
WINDOW = 8192


async def publish_acked(client: angzarr_es.Client, subjects: list[str], payload: bytes) -> None:
    """Publish one commit per subject, pipelined: WINDOW in flight, every ack checked.

    Fire-and-forget publishes can be dropped by a busy server, so each carries a
    reply inbox and a window waits for all its acks.
    """
    async with jsadmin.admin(client) as nc:  # a connection of its own
        await _publish_acked(nc, subjects, payload)


async def _publish_acked(nc: NatsClient, subjects: list[str], payload: bytes) -> None:
    inbox = nc.new_inbox()
    acked = 0
    target = 0
    errors: list[bytes] = []
    window_done = asyncio.Event()

    async def on_ack(msg: Msg) -> None:
        nonlocal acked
        acked += 1
        data = msg.data
        if b'"error"' in data:
            errors.append(data)
        if acked >= target:
            window_done.set()

    sub = await nc.subscribe(inbox, cb=on_ack)
    try:
        for start in range(0, len(subjects), WINDOW):
            chunk = subjects[start : start + WINDOW]
            target = start + len(chunk)
            window_done.clear()
            for subject in chunk:
                await nc.publish(subject, payload, reply=inbox)
            await asyncio.wait_for(window_done.wait(), 30)
    finally:
        await sub.unsubscribe()
    assert not errors, errors[:3]
    assert acked == len(subjects)


def many_ids(n: int, tag: str) -> list[str]:
    """UUIDs, with every seventh id hostile (dots, spaces, wildcards, non-ASCII)."""
    return [f"{tag}.{i} *> ☃" if i % 7 == 0 else str(uuid.uuid4()) for i in range(n)]


async def traced_listing(store: angzarr_es.EventStore, expected: set[str]) -> int:
    """Peak bytes allocated while listing; checks every id comes back exactly once."""
    gc.collect()
    tracemalloc.start()
    try:
        async for root in store.list_roots():
            expected.remove(root)  # KeyError on a stranger or a duplicate
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not expected, f"{len(expected)} aggregates were not listed"
    return peak


@pytest.mark.timeout(180)
async def test_list_roots_pages_through_200k_aggregates_in_bounded_memory(
    client: angzarr_es.Client,
) -> None:
    prefix = f"{client.config.nats.subject_prefix}.events."
    payload = codec.encode_commit(
        domain="player",
        root=b"bulk",
        first_sequence=0,
        events=[codec.pack(player_pb2.FundsDeposited(amount_cents=1))],
        correlation_id="",
        created_at=dt.datetime.now(dt.UTC),
    )
    small_ids = many_ids(SERVER_PAGE, "small")
    big_ids = many_ids(BIG, "big")
    subjects = [prefix + "small." + encode_root(r) for r in small_ids]
    subjects += [prefix + "big." + encode_root(r) for r in big_ids]
    await publish_acked(client, subjects, payload)
    del subjects

    pages = 0

    async def counting(request: Request, forward: Forward) -> Reply:
        nonlocal pages
        if faults.operation(request) == "STREAM.INFO" and b"subjects_filter" in request.payload:
            pages += 1
        return await forward(request)

    with faults.intercept(client, on_request=counting):
        # One full server page versus three: if the client held every id, the big
        # listing would need more than twice the memory of the small one.
        small_peak = await traced_listing(client.store("small"), set(small_ids))
        assert pages == 1
        pages = 0
        big_peak = await traced_listing(client.store("big"), set(big_ids))
        assert pages == -(-BIG // SERVER_PAGE) == 3
        assert big_peak < 1.5 * small_peak, (big_peak, small_peak)

        assert [d async for d in client.list_domains()] == ["big", "small"]
        assert [r async for r in client.store("unused").list_roots()] == []
        assert [r async for r in client.store("big", "what-if").list_roots()] == []


async def test_listing_a_missing_stream_is_an_error(client: angzarr_es.Client) -> None:
    nats = msgspec.structs.replace(client.config.nats, stream_name="no-such-stream")
    cfg = angzarr_es.Config(bus=msgspec.structs.replace(client.config.bus, nats=nats))
    async with await angzarr_es.connect(config=cfg) as other:
        with pytest.raises(angzarr_es.StoreUnavailable):
            [r async for r in other.store("player").list_roots()]


async def test_a_stray_subject_is_skipped_not_fatal(
    client: angzarr_es.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone else's message on a subject of the domain that no store writes."""
    store = client.store("player")
    for root in ("alice", "zed"):
        await store.append(root, [player_pb2.PlayerRegistered(name=root)], expected=0)
    prefix = client.config.nats.subject_prefix
    await publish_acked(client, [f"{prefix}.events.player.bad@token"], b"")
    listed = [r async for r in store.list_roots()]
    assert listed == ["alice", "zed"]
    assert "bad@token" in caplog.text
