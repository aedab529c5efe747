"""Reading from the JetStream store: lagging replicas, consumer replay, ranges
and large histories, big stored headers, corrupt and unknown payloads, and
reads cut short by a close or a cancel."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as real_dt
import uuid
from contextlib import aclosing

import msgspec
import pytest
from google.protobuf import any_pb2

import angzarr_es
from angzarr_es import codec
from angzarr_es.config import Config
from angzarr_es.pb import core_pb2
from angzarr_es.testing import faults
from angzarr_es.testing.faults import Batch, BatchForward, Request
from tests.support import jsadmin
from tests.support.cluster import eventually
from tests.support.configs import with_nats
from tests.support.events import deposit
from tests.support.jsadmin import messages as js
from tests.support.loadgen import until
from tests.support.wirefaults import replica_page


async def test_loads_page_correctly_when_stored_headers_are_large(
    client: angzarr_es.Client,
) -> None:
    """The server counts stored headers against a batch's max_bytes; a writer
    with big headers (trace state, foreign tools) must not make a load stop
    early."""
    store = client.store("player")
    subject = store.subject("fat")
    fat = {"X-Padding": "p" * 3000}
    n = 1200  # 1200 x ~3 KB of headers: more than one 2 MiB page
    last = 0
    for i in range(n):
        payload = codec.encode_commit(
            domain="player",
            root=b"fat",
            first_sequence=i,
            events=[codec.pack(deposit(i))],
            correlation_id="",
            created_at=real_dt.datetime.now(real_dt.UTC),
        )
        headers = {**fat, js.H_EXPECTED_LAST_SUBJECT_SEQ: str(last)}
        ack = await jsadmin.publish(client, subject, payload, headers)
        assert ack.error is None
        last = ack.seq
    async with await angzarr_es.connect(config=client.config) as fresh:
        hist = await fresh.store("player").load("fat")
        assert [e.sequence for e in hist.events] == list(range(n))
        assert hist.next_sequence == n
        seen = [e.sequence async for e in fresh.store("player").iter("fat")]
        assert seen == list(range(n))


async def test_closing_the_client_during_a_read_raises_a_typed_error(
    client: angzarr_es.Client,
) -> None:
    store = client.store("player")
    pid = uuid.uuid4()
    for i in range(20):
        await store.append(pid, [deposit(i)], expected=i)
    async with await angzarr_es.connect(config=client.config) as other:
        reader = asyncio.ensure_future(other.store("player").load(pid))
        await asyncio.sleep(0)  # let the read start
        await other.close()
        # If the read was still in flight: a typed error, never a KeyError.
        with contextlib.suppress(angzarr_es.StoreUnavailable):
            await reader


async def test_a_cancelled_replay_leaves_no_consumer(config: Config) -> None:
    nats = msgspec.structs.replace(config.nats, replay="consumer", cache_bytes=0)
    cfg = Config(bus=msgspec.structs.replace(config.bus, nats=nats))
    async with await angzarr_es.connect(config=cfg) as client:
        await client.provision()
        store = client.store("player")
        for i in range(50):
            await store.append("c", [deposit(i)], expected=i)
        for _ in range(20):
            task = asyncio.ensure_future(store.load("c"))
            for _ in range(3):
                await asyncio.sleep(0)  # cancel somewhere inside create/pull/delete
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        names = await jsadmin.consumer_names(client, nats.stream_name)
        # Deletion after a cancellation runs in the generator's cleanup; give
        # every pending cleanup the chance to finish before counting.
        assert await store.load("c")
        left = await jsadmin.consumer_names(client, nats.stream_name)
        assert left == [], names
        await jsadmin.delete_stream(client, nats.stream_name)


@pytest.mark.parametrize("cached", [False, True])
async def test_a_lagging_replica_never_hides_our_own_append(
    client: angzarr_es.Client, cached: bool
) -> None:
    config = client.config if cached else with_nats(client.config, cache_bytes=0)
    async with await angzarr_es.connect(config=config) as writer:
        store = writer.store("player")
        pid = uuid.uuid4()
        for i in range(5):
            await store.append(pid, [deposit(i)], expected=i)

        async def lagging(request: Request, forward: BatchForward) -> Batch:
            # A follower that has only the first three commits.
            return replica_page(await forward(request), 3, 3)

        with faults.intercept(writer, on_batch=lagging):
            hist = await store.load(pid)
            assert [e.sequence for e in hist.events] == [0, 1, 2, 3, 4]
            assert hist.next_sequence == 5
            assert [e.sequence async for e in store.iter(pid)] == [0, 1, 2, 3, 4]
        assert writer.cache_stats.hits == (2 if cached else 0)
    assert (await jsadmin.stream_info_json(client, client.config.nats.stream_name))["state"][
        "consumer_count"
    ] == 0


async def test_consumer_replay_leaves_no_consumer_behind(config: Config) -> None:
    nats = msgspec.structs.replace(config.nats, replay="consumer", cache_bytes=0)
    cfg = Config(bus=msgspec.structs.replace(config.bus, nats=nats))
    async with await angzarr_es.connect(config=cfg) as client:
        await client.provision()
        store = client.store("player")
        for i in range(3):
            await store.append("c", [deposit(i)], expected=i)
        await store.load("c")
        await store.load("c", 1, 2)
        async with aclosing(store.iter("c")) as events:
            async for _ in events:
                break  # leaving early: aclosing() deletes the consumer now
        assert (await jsadmin.stream_info_json(client, client.config.nats.stream_name))["state"][
            "consumer_count"
        ] == 0
        await jsadmin.delete_stream(client, nats.stream_name)


async def test_partial_ranges_on_a_ten_thousand_event_aggregate(client: angzarr_es.Client) -> None:
    store = client.store("player")
    pid = uuid.uuid4()
    # Commits of uneven sizes so range edges fall inside commits.
    n = 0
    sizes = [1, 7, 100, 33] * 75
    for size in sizes:
        await store.append(pid, [deposit(n + i) for i in range(size)], expected=n)
        n += size
    assert n == 10_575
    for lo, hi in [(0, None), (0, 1), (9_999, 10_001), (4_321, 5_678), (10_574, None), (700, 700)]:
        hist = await store.load(pid, lo, hi)
        expect = list(range(n))[lo:hi]
        assert [e.event.amount_cents for e in hist.events] == expect  # type: ignore[attr-defined]
        assert hist.next_sequence == n


async def test_a_hundred_thousand_events_load_and_iterate_in_bounded_memory(
    client: angzarr_es.Client,
) -> None:
    import tracemalloc

    store = client.store("player")
    pid = uuid.uuid4()
    n = 0
    for _ in range(100):
        await store.append(pid, [deposit(n + i) for i in range(1000)], expected=n)
        n += 1000
    hist = await store.load(pid)
    assert len(hist.events) == 100_000
    assert hist.events[-1].sequence == 99_999
    del hist
    tracemalloc.start()
    try:
        count = 0
        async for event in store.iter(pid):
            assert event.sequence == count
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 100_000
    # A full history of 100k RecordedEvents is ~60 MB of Python objects; a page is a few MB.
    assert peak < 30 * 1024 * 1024, peak


async def test_a_corrupt_payload_raises_codec_error_naming_subject_and_sequence(
    client: angzarr_es.Client,
) -> None:
    store = client.store("player")
    await store.append("bad", [deposit(1)], expected=0)
    subject = store.subject("bad")
    seq = (await jsadmin.publish(client, subject, b"\xff\xff\xff not protobuf")).seq
    await jsadmin.publish(client, subject, codec_book(2))
    with pytest.raises(angzarr_es.CodecError) as info:
        await store.load("bad")
    assert info.value.subject == subject
    assert info.value.stream_sequence == seq
    assert subject in str(info.value)
    assert str(seq) in str(info.value)


def codec_book(seq: int) -> bytes:
    return codec.encode_commit(
        domain="player",
        root=b"bad",
        first_sequence=seq,
        events=[codec.pack(deposit(seq))],
        correlation_id="",
        created_at=__import__("datetime").datetime.now(__import__("datetime").UTC),
    )


async def test_an_unknown_event_type_stays_available_as_any(client: angzarr_es.Client) -> None:
    store = client.store("player")
    book = core_pb2.EventBook()
    page = book.pages.add()
    page.header.sequence = 0
    page.event.type_url = "type.example.com/some.future.EventV9"
    page.event.value = b"\x08\x2a"
    book.next_sequence = 1
    await jsadmin.publish(client, store.subject("u"), book.SerializeToString())
    hist = await store.load("u")
    event = hist.events[0]
    assert event.type_name == "some.future.EventV9"
    assert isinstance(event.event, any_pb2.Any)
    assert event.event.value == b"\x08\x2a"
    res = await store.append("u", [deposit(1)], expected=1)
    assert res.first_sequence == 1


async def test_next_sequence_from_the_leader_asks_the_stream_leader(
    client: angzarr_es.Client,
) -> None:
    store, root = client.store("player"), uuid.uuid4()
    await store.append(root, [deposit(0), deposit(1)], expected=0)
    async with jsadmin.watch(client, "$JS.API.>") as requests:
        assert await store.next_sequence(root) == 2
        assert await store.next_sequence(root, leader=True) == 2
        await eventually(lambda: until(len(requests) >= 2), timeout=10, what="both reads")
    stream = client.config.nats.stream_name
    assert [m.subject.rpartition(stream)[0] for m in requests] == [
        "$JS.API.DIRECT.GET.",  # any replica
        "$JS.API.STREAM.MSG.GET.",  # the leader
    ]
