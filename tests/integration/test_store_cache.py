"""The hot-aggregate cache against a real server: one request per cached load,
appends extending their aggregate's entry, ranges, `as_of`, `iter` and
snapshots served from entries, and what another client's appends, purges,
deleted editions and a re-created stream do to them; lagging replicas, the
byte bound, the counts in metrics and `health()`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec
import pytest

import angzarr_es
from angzarr_es import CodecError, History, RecordedEvent
from angzarr_es.config import Config
from angzarr_es.testing import faults
from angzarr_es.testing.faults import Batch, BatchForward, Forward, Reply, Request
from tests.support import jsadmin
from tests.support.configs import with_nats
from tests.support.events import deposit
from tests.support.wirefaults import replica_page


@pytest.fixture
async def other(client: angzarr_es.Client) -> AsyncIterator[angzarr_es.Client]:
    """A second client on the same stream, as another process would be."""
    async with await angzarr_es.connect(config=client.config) as c:
        yield c


@pytest.fixture
async def plain(client: angzarr_es.Client) -> AsyncIterator[angzarr_es.Client]:
    """A client without the cache: what a load at the same moment returns."""
    async with await angzarr_es.connect(config=with_nats(client.config, cache_bytes=0)) as c:
        yield c


@contextlib.contextmanager
def requests(client: angzarr_es.Client) -> Iterator[list[str]]:
    """Every request `client` sends while the block runs (its `what`)."""
    sent: list[str] = []

    async def counted(request: Request, forward: Forward) -> Reply:
        sent.append(request.what)
        return await forward(request)

    async def counted_batch(request: Request, forward: BatchForward) -> Batch:
        sent.append(request.what)
        return await forward(request)

    with faults.intercept(client, on_request=counted, on_batch=counted_batch):
        yield sent


def view(events: list[RecordedEvent]) -> list[tuple[Any, ...]]:
    return [(e.sequence, e.event, e.type_name, e.created_at, e.correlation_id) for e in events]


def assert_same(got: History, want: History) -> None:
    assert got.next_sequence == want.next_sequence
    assert view(got.events) == view(want.events)


def stats(client: angzarr_es.Client) -> tuple[int, int, int]:
    s = client.cache_stats
    return s.hits, s.misses, s.fallbacks


async def test_a_cached_load_is_one_request_whatever_the_history(
    client: angzarr_es.Client, plain: angzarr_es.Client
) -> None:
    store, root = client.store("player"), uuid.uuid4()
    for i in range(300):
        await store.append(root, [deposit(i)], expected=i)
    for _ in range(3):
        with requests(client) as sent:
            hist = await store.load(root)
        assert len(sent) == 1, sent
        assert_same(hist, await plain.store("player").load(root))
    assert stats(client) == (3, 0, 0)


async def test_a_loaded_aggregate_is_cached_and_appends_extend_it_without_reading(
    client: angzarr_es.Client,
    other: angzarr_es.Client,
    plain: angzarr_es.Client,
) -> None:
    root = uuid.uuid4()
    for i in range(0, 20, 4):
        await other.store("player").append(root, [deposit(i + k) for k in range(4)], expected=i)
    store = client.store("player")
    await store.load(root)  # a miss: the whole history, now cached
    with requests(client) as sent:
        for i in range(20, 23):
            await store.append(root, [deposit(i)], expected=i, correlation_id="wf")
        hist = await store.load(root)
    # Publishes only (each commit and its correlation entry), then the one read.
    assert all(what.startswith("append to ") for what in sent[:-1])
    assert sent[-1] == f"read {store.subject(root)}"
    assert_same(hist, await plain.store("player").load(root))
    assert stats(client) == (1, 1, 0)


async def test_another_clients_commits_come_in_the_same_request(
    client: angzarr_es.Client,
    other: angzarr_es.Client,
    plain: angzarr_es.Client,
) -> None:
    store, theirs, root = client.store("player"), other.store("player"), uuid.uuid4()
    await store.append(root, [deposit(0)], expected=0)
    await theirs.append(root, [deposit(1), deposit(2)], expected=1)
    await theirs.append(root, [deposit(3)], expected=3)
    with requests(client) as sent:
        hist = await store.load(root)
    assert len(sent) == 1
    assert_same(hist, await plain.store("player").load(root))
    # ... and the entry now holds them: appending at the new position extends it.
    await store.append(root, [deposit(4)], expected=4)
    with requests(client) as sent:
        hist = await store.load(root)
    assert len(sent) == 1
    assert_same(hist, await plain.store("player").load(root))


async def test_ranges_as_of_and_iter_are_served_from_the_entry(
    client: angzarr_es.Client, plain: angzarr_es.Client
) -> None:
    store, root = client.store("player"), uuid.uuid4()
    stamps = []
    for i in range(12):
        await store.append(root, [deposit(i)], expected=i)
        stamps.append(dt.datetime.now(dt.UTC))
    ref = plain.store("player")
    for lo, hi in ((0, None), (3, 7), (11, None), (12, None), (20, None), (5, 5), (0, 1)):
        with requests(client) as sent:
            got = await store.load(root, lo, hi)
            seen = [e async for e in store.iter(root, lo, hi)]
        assert len(sent) == 2, (lo, hi, sent)
        want = await ref.load(root, lo, hi)
        assert_same(got, want)
        assert view(seen) == view(want.events)
    for when in (stamps[0], stamps[5], stamps[-1], stamps[0] - dt.timedelta(days=1)):
        with requests(client) as sent:
            got = await store.load(root, as_of=when)
        assert len(sent) == 1
        assert_same(got, await ref.load(root, as_of=when))


async def test_iter_streams_what_came_after_the_entry(
    client: angzarr_es.Client, other: angzarr_es.Client, plain: angzarr_es.Client
) -> None:
    store, root = client.store("player"), uuid.uuid4()
    await store.append(root, [deposit(0), deposit(1)], expected=0)
    for i in range(2, 40):
        await other.store("player").append(root, [deposit(i)], expected=i)
    seen = [e async for e in store.iter(root, 1)]
    assert view(seen) == view((await plain.store("player").load(root, 1)).events)
    assert stats(client)[0] == 1


async def test_snapshot_loads_seed_the_entry_and_are_served_from_it(
    client: angzarr_es.Client, plain: angzarr_es.Client
) -> None:
    store, root = client.store("player"), uuid.uuid4()
    for i in range(10):
        await store.append(root, [deposit(i)], expected=i)
    await store.save_snapshot(root, deposit(999), 6)
    async with await angzarr_es.connect(config=client.config) as fresh:
        cold = fresh.store("player")
        ref = plain.store("player")
        got = await cold.load(root, snapshot=True)  # a miss: events 7.. and the snapshot
        want = await ref.load(root, snapshot=True)
        assert_same(got, want)
        assert got.snapshot == want.snapshot
        s = fresh.cache_stats
        assert (s.entries, s.events) == (1, 3)  # one entry, of events 7, 8, 9
        with requests(fresh) as sent:
            again = await cold.load(root, snapshot=True)
        assert len(sent) == 2, sent  # the snapshot, and the events from the entry's tail
        assert_same(again, want)
        assert again.snapshot == want.snapshot
        # A load from 0 is not covered by an entry from 7: read whole, cached from 0.
        assert_same(await cold.load(root), await ref.load(root))
        assert stats(fresh) == (1, 2, 0)
        assert_same(await cold.load(root, 2, 4), await ref.load(root, 2, 4))
        assert stats(fresh) == (2, 2, 0)


@pytest.mark.parametrize("how", ["subject", "stream"])
async def test_a_purge_by_another_client_never_serves_stale_events(
    client: angzarr_es.Client, other: angzarr_es.Client, plain: angzarr_es.Client, how: str
) -> None:
    store, theirs, root = client.store("player"), other.store("player"), uuid.uuid4()
    for i in range(5):
        await store.append(root, [deposit(i)], expected=i)
    await store.load(root)
    stream = client.config.nats.stream_name
    await jsadmin.purge(other, stream, store.subject(root) if how == "subject" else "")
    hist = await store.load(root)
    assert hist.events == []
    assert hist.next_sequence == 0
    assert stats(client) == (1, 0, 1)
    await theirs.append(root, [deposit(100)], expected=0)
    assert_same(await store.load(root), await plain.store("player").load(root))
    # Appending after the purge lands at the real position, and extends nothing stale.
    await store.append(root, [deposit(101)], expected=1)
    assert_same(await store.load(root), await plain.store("player").load(root))


async def test_a_deleted_edition_never_serves_stale_events(
    client: angzarr_es.Client, other: angzarr_es.Client, plain: angzarr_es.Client
) -> None:
    store, root = client.store("player", "trial"), uuid.uuid4()
    for i in range(3):
        await store.append(root, [deposit(i)], expected=i)
    assert len((await store.load(root)).events) == 3
    await other.delete_edition("trial")
    hist = await store.load(root)
    assert hist.events == []
    assert hist.next_sequence == 0
    assert stats(client)[2] == 1
    await other.store("player", "trial").append(root, [deposit(7)], expected=0)
    assert_same(await store.load(root), await plain.store("player", "trial").load(root))
    # Deleted by this client: its entries go at once (a miss, not a fallback).
    await client.delete_edition("trial")
    assert (await store.load(root)).events == []
    assert stats(client)[2] == 1


async def test_a_re_created_stream_never_serves_stale_events(
    client: angzarr_es.Client, other: angzarr_es.Client, plain: angzarr_es.Client
) -> None:
    store, root = client.store("player"), uuid.uuid4()
    await store.append(root, [deposit(1)], expected=0)
    await store.load(root)
    await jsadmin.delete_stream(other, client.config.nats.stream_name)
    await other.provision()
    # The new stream's first commit sits at the same stream sequence as the
    # cached tail did: only its bytes tell it apart.
    ack = await other.store("player").append(root, [deposit(2)], expected=0)
    assert ack.stream_sequence == 1
    assert_same(await store.load(root), await plain.store("player").load(root))
    assert stats(client) == (1, 0, 1)


@pytest.mark.parametrize("replica_has", ["nothing", "the tail"])
async def test_a_replica_behind_this_process_is_completed_from_the_leader(
    client: angzarr_es.Client,
    other: angzarr_es.Client,
    plain: angzarr_es.Client,
    replica_has: str,
) -> None:
    store, root = client.store("player"), uuid.uuid4()
    for i in range(4):
        await store.append(root, [deposit(i)], expected=i)
    await other.store("player").append(root, [deposit(4)], expected=4)
    # This client learns of the other's commit without reading it (a position lookup).
    assert await store.next_sequence(root) == 5

    async def lagging(request: Request, forward: BatchForward) -> Batch:
        # A follower without our last commit, or with it but not the other's.
        got = await forward(request)
        if replica_has == "nothing":
            return replica_page(got, 0, 0)
        return replica_page(got, 1, msgspec.json.decode(request.payload)["seq"])

    with faults.intercept(client, on_batch=lagging):
        assert_same(await store.load(root), await plain.store("player").load(root))
        assert_same(await store.load(root, 2), await plain.store("player").load(root, 2))
    assert stats(client) == (2, 0, 0)


async def test_a_purge_that_keeps_the_last_commit_is_seen_only_after_clear_cache(
    client: angzarr_es.Client, plain: angzarr_es.Client
) -> None:
    """The documented limit: the check looks at the tail alone."""
    store, root = client.store("player"), uuid.uuid4()
    for i in range(3):
        await store.append(root, [deposit(i)], expected=i)
    await jsadmin.purge(client, client.config.nats.stream_name, store.subject(root), keep=1)
    with pytest.raises(CodecError):
        await plain.store("player").load(root)
    assert [e.sequence for e in (await store.load(root)).events] == [0, 1, 2]
    client.clear_cache()
    with pytest.raises(CodecError):
        await store.load(root)


async def test_a_foreign_commit_after_the_tail_is_a_codec_error_as_without_the_cache(
    client: angzarr_es.Client, plain: angzarr_es.Client
) -> None:
    store, root = client.store("player"), uuid.uuid4()
    await store.append(root, [deposit(0)], expected=0)
    ack = await jsadmin.publish(client, store.subject(root), b"\x08\x01junk")
    with pytest.raises(CodecError) as cached:
        await store.load(root)
    with pytest.raises(CodecError) as uncached:
        await plain.store("player").load(root)
    assert cached.value.stream_sequence == uncached.value.stream_sequence == ack.seq


async def test_a_repeated_idempotent_append_extends_nothing(
    client: angzarr_es.Client, plain: angzarr_es.Client
) -> None:
    store, root = client.store("player"), uuid.uuid4()
    await store.append(root, [deposit(0)], expected=0, idempotency_key="k1")
    again = await store.append(root, [deposit(0)], expected=0, idempotency_key="k1")
    assert again.duplicate
    later = await store.append(root, [deposit(1)], expected=1, idempotency_key="k1")
    assert later.duplicate
    assert_same(await store.load(root), await plain.store("player").load(root))


async def test_concurrent_loads_and_appends_in_one_client(
    client: angzarr_es.Client, other: angzarr_es.Client, plain: angzarr_es.Client
) -> None:
    store, root = client.store("player"), uuid.uuid4()
    await store.append(root, [deposit(0)], expected=0)

    async def writer(s: angzarr_es.EventStore, base: int) -> None:
        for i in range(15):
            await s.append(root, [deposit(base + i)], expected=angzarr_es.ANY)

    async def reader() -> None:
        for _ in range(30):
            hist = await store.load(root)
            assert [e.sequence for e in hist.events] == list(range(hist.next_sequence))

    await asyncio.gather(writer(store, 100), writer(other.store("player"), 200), reader(), reader())
    assert_same(await store.load(root), await plain.store("player").load(root))


async def test_loaded_lists_belong_to_the_caller(client: angzarr_es.Client) -> None:
    store, root = client.store("player"), uuid.uuid4()
    await store.append(root, [deposit(0), deposit(1)], expected=0)
    first = await store.load(root)
    first.events.clear()
    assert len((await store.load(root)).events) == 2


async def test_the_cache_keeps_within_its_bytes(config: Config) -> None:
    cfg = with_nats(config, cache_bytes=256 * 1024)
    async with await angzarr_es.connect(config=cfg) as client:
        await client.provision()
        store = client.store("player")
        roots = [uuid.uuid4() for _ in range(300)]
        for root in roots:
            await store.append(root, [deposit(1), deposit(2)], expected=0)
        s = client.cache_stats
        assert 0 < s.bytes <= s.max_bytes
        assert s.evictions > 0
        assert s.entries + s.evictions == len(roots)
        # The first roots were evicted (least recently used): reading them is a miss.
        await store.load(roots[0])
        assert stats(client)[1] == 1
        # One history larger than a quarter of the cache is never kept.
        big = uuid.uuid4()
        await store.append(big, [deposit(i) for i in range(200)], expected=0)
        s = client.cache_stats
        assert s.events == 2 * s.entries  # every entry is a root of two events
        assert len((await store.load(big)).events) == 200
        assert stats(client)[1] == 2  # a miss: not kept by the append
        s = client.cache_stats
        assert s.events == 2 * s.entries  # nor by the load
        await jsadmin.delete_stream(client, cfg.nats.stream_name)
        await jsadmin.delete_stream(client, cfg.nats.snapshot_stream)


async def test_cache_bytes_zero_turns_it_off(plain: angzarr_es.Client) -> None:
    store, root = plain.store("player"), uuid.uuid4()
    await store.append(root, [deposit(0)], expected=0)
    await store.load(root)
    cache = (await plain.health()).cache
    assert cache is not None
    assert (cache.max_bytes, cache.entries, cache.hits, cache.misses) == (0, 0, 0, 0)


async def test_health_and_the_observer_count_hits_misses_and_fallbacks(
    client: angzarr_es.Client, other: angzarr_es.Client
) -> None:
    seen: list[tuple[str, angzarr_es.CacheOutcome]] = []

    class Spy(angzarr_es.Observer):
        def cache_load(self, domain: str, outcome: angzarr_es.CacheOutcome) -> None:
            seen.append((domain, outcome))

    client.observer = Spy()
    store, root = client.store("player"), uuid.uuid4()
    await other.store("player").append(root, [deposit(0)], expected=0)
    await store.load(root)
    await store.load(root)
    await jsadmin.purge(other, client.config.nats.stream_name, store.subject(root))
    await store.load(root)
    assert seen == [("player", "miss"), ("player", "hit"), ("player", "fallback")]
    cache = (await client.health()).cache
    assert cache is not None
    assert (cache.hits, cache.misses, cache.fallbacks) == (1, 1, 1)
    assert cache.max_bytes == client.config.nats.cache_bytes


@pytest.mark.parametrize("how", ["load", "iter"])
async def test_a_tail_that_fills_its_page_is_followed_by_the_next_page(
    client: angzarr_es.Client,
    other: angzarr_es.Client,
    plain: angzarr_es.Client,
    how: str,
) -> None:
    """A server with a large max_payload may answer the read from the tail
    with the tail alone and "more to come": the read goes on after it."""
    store, root = client.store("player"), uuid.uuid4()
    await store.append(root, [deposit(0)], expected=0)
    await other.store("player").append(root, [deposit(1), deposit(2)], expected=1)
    pages: list[int] = []

    async def spy(request: Request, forward: BatchForward) -> Batch:
        got = await forward(request)
        if not pages:  # as if the tail filled the page
            got = replica_page(got, 1, msgspec.json.decode(request.payload)["seq"], more=True)
        pages.append(len(got.messages))
        return got

    want = await plain.store("player").load(root)
    with faults.intercept(client, on_batch=spy):
        if how == "iter":
            assert view([e async for e in store.iter(root)]) == view(want.events)
        else:
            assert_same(await store.load(root), want)
    assert pages == [1, 1]  # the tail alone, then the other's commit
