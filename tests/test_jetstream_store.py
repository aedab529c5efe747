"""Behaviour specific to the JetStream store: concurrency under races, lost
acks, stale replicas, provisioning, limits and corrupt data."""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import aclosing
from typing import Any

import msgspec
import pytest
from google.protobuf import any_pb2

import angzarr_es
from angzarr_es import codec
from angzarr_es._nats import messages as js
from angzarr_es.config import Config
from angzarr_es.pb import core_pb2, player_pb2
from tests.conftest import delete_stream, fresh_config


def deposit(cents: int) -> player_pb2.FundsDeposited:
    return player_pb2.FundsDeposited(amount_cents=cents, currency="EUR")


async def stream_info(client: angzarr_es.Client) -> dict[str, Any]:
    name = client.config.nats.stream_name
    data = await client._wire.js.call(f"$JS.API.STREAM.INFO.{name}")
    info: dict[str, Any] = msgspec.json.decode(data)
    return info


async def test_of_n_racing_writers_with_the_same_expected_exactly_one_wins(
    client: angzarr_es.Client, config: Config
) -> None:
    pid = uuid.uuid4()
    await client.store("player").append(pid, [deposit(0)], expected=0)
    # Separate clients: separate caches, as separate processes would have.
    others = [await angzarr_es.connect(config=config) for _ in range(10)]
    try:
        for round_ in range(1, 6):
            results = await asyncio.gather(
                *(
                    c.store("player").append(pid, [deposit(round_)], expected=round_)
                    for c in others
                ),
                return_exceptions=True,
            )
            wins = [r for r in results if isinstance(r, angzarr_es.AppendResult)]
            losses = [r for r in results if isinstance(r, angzarr_es.ConcurrencyError)]
            assert len(wins) == 1, results
            assert len(losses) == len(others) - 1
            assert all(e.expected == round_ and e.actual == round_ + 1 for e in losses)
    finally:
        for c in others:
            await c.close()
    hist = await client.store("player").load(pid)
    assert [e.sequence for e in hist.events] == list(range(6))
    assert hist.next_sequence == 6


async def test_twenty_concurrent_writers_on_one_aggregate_keep_it_dense(
    client: angzarr_es.Client, config: Config
) -> None:
    pid = uuid.uuid4()
    writers = [await angzarr_es.connect(config=config) for _ in range(20)]
    per_writer = 5
    won: list[tuple[int, int]] = []

    async def write(index: int, c: angzarr_es.Client) -> None:
        store = c.store("player")
        done = 0
        expected = 0
        while done < per_writer:
            try:
                res = await store.append(pid, [deposit(index * 100 + done)], expected=expected)
            except angzarr_es.ConcurrencyError as exc:
                expected = exc.actual
                continue
            won.append((res.first_sequence, index * 100 + done))
            expected = res.next_sequence
            done += 1

    try:
        await asyncio.wait_for(asyncio.gather(*(write(i, c) for i, c in enumerate(writers))), 60)
    finally:
        for c in writers:
            await c.close()
    hist = await client.store("player").load(pid)
    total = len(writers) * per_writer
    assert [e.sequence for e in hist.events] == list(range(total))
    amounts = [e.event.amount_cents for e in hist.events]  # type: ignore[attr-defined]
    assert sorted(amounts) == sorted(a for _, a in won)  # no duplicates, nothing lost
    assert dict(won) == dict(enumerate(amounts))  # each win landed where it was reported


async def test_expected_any_from_many_writers_never_duplicates(
    client: angzarr_es.Client, config: Config
) -> None:
    pid = "any-race"
    writers = [await angzarr_es.connect(config=config) for _ in range(8)]
    try:
        await asyncio.gather(
            *(
                c.store("player").append(pid, [deposit(i * 10 + k)], expected=angzarr_es.ANY)
                for i, c in enumerate(writers)
                for k in range(3)
            )
        )
    finally:
        for c in writers:
            await c.close()
    hist = await client.store("player").load(pid)
    assert [e.sequence for e in hist.events] == list(range(24))
    assert len({e.event.amount_cents for e in hist.events}) == 24  # type: ignore[attr-defined]


async def test_a_burst_of_any_appends_in_one_process_all_land(
    client: angzarr_es.Client, config: Config
) -> None:
    """100 ANY appends at once from one process (plus 20 from another): every
    one lands, once. Racing each other, one of 100 ran out of retries and
    raised a ConcurrencyError with expected == actual; they now take turns."""
    pid = "any-burst"
    store = client.store("player")
    async with await angzarr_es.connect(config=config) as other:
        results = await asyncio.gather(
            *(store.append(pid, [deposit(i)], expected=angzarr_es.ANY) for i in range(100)),
            *(
                other.store("player").append(pid, [deposit(1000 + i)], expected=angzarr_es.ANY)
                for i in range(20)
            ),
        )
    hist = await store.load(pid)
    assert [e.sequence for e in hist.events] == list(range(120))
    amounts = [e.event.amount_cents for e in hist.events]  # type: ignore[attr-defined]
    assert sorted(amounts) == [*range(100), *range(1000, 1020)]
    assert sorted(r.first_sequence for r in results) == list(range(120))
    assert len(client._ctx.turns) == 0  # no lock is kept once idle


async def test_a_conflict_known_from_the_cache_raises_without_publishing(
    client: angzarr_es.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.store("player")
    pid = uuid.uuid4()
    await store.append(pid, [deposit(1), deposit(2)], expected=0)
    published: list[str] = []
    real = client._wire.publish_commit

    async def spy(subject: str, *args: Any, **kwargs: Any) -> js.PubAck:
        published.append(subject)
        return await real(subject, *args, **kwargs)

    monkeypatch.setattr(client._wire, "publish_commit", spy)
    with pytest.raises(angzarr_es.ConcurrencyError):
        await store.append(pid, [deposit(3)], expected=1)
    assert published == []


async def test_load_then_append_costs_one_round_trip(
    client: angzarr_es.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.store("player")
    pid = uuid.uuid4()
    await store.append(pid, [deposit(1)], expected=0)
    await store.load(pid)
    calls: list[str] = []
    wire = client._wire
    for name in ("_ask", "_gather"):
        real = getattr(wire, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(wire, name, spy)
    await store.append(pid, [deposit(2)], expected=1)
    assert calls == ["_ask"]


async def test_a_lost_ack_is_retried_without_writing_twice(
    client: angzarr_es.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.store("player")
    pid = uuid.uuid4()
    await store.append(pid, [deposit(1)], expected=0)
    real = client._wire.publish_commit
    attempts: list[js.PubAck] = []

    async def lose_first_ack(*args: Any, **kwargs: Any) -> js.PubAck:
        ack = await real(*args, **kwargs)  # the commit IS stored...
        attempts.append(ack)
        if len(attempts) == 1:
            raise angzarr_es.StoreTimeout("ack lost")  # ...but the caller never hears
        return ack

    monkeypatch.setattr(client._wire, "publish_commit", lose_first_ack)
    res = await store.append(pid, [deposit(2), deposit(3)], expected=1)
    assert (res.first_sequence, res.next_sequence) == (1, 3)
    assert len(attempts) == 2
    # Single server: the retry is refused by the expected-sequence check (10071)
    # or recognised as a duplicate; either way it is reported as our success.
    second = attempts[1]
    assert second.duplicate or (second.error is not None and second.error.err_code == 10071)
    assert res.stream_sequence == attempts[0].seq
    hist = await store.load(pid)
    assert [e.event.amount_cents for e in hist.events] == [1, 2, 3]  # type: ignore[attr-defined]


async def test_a_lost_ack_then_a_real_conflict_is_still_a_conflict(
    client: angzarr_es.Client, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.store("player")
    pid = uuid.uuid4()
    await store.append(pid, [deposit(1)], expected=0)
    async with await angzarr_es.connect(config=config) as other:
        real = client._wire.publish_commit
        calls = 0

        async def other_wins_while_ack_lost(*args: Any, **kwargs: Any) -> js.PubAck:
            nonlocal calls
            calls += 1
            if calls == 1:
                # Our first attempt never reaches the server; another writer wins.
                await other.store("player").append(pid, [deposit(99)], expected=1)
                raise angzarr_es.StoreTimeout("request lost")
            return await real(*args, **kwargs)

        monkeypatch.setattr(client._wire, "publish_commit", other_wins_while_ack_lost)
        with pytest.raises(angzarr_es.ConcurrencyError) as info:
            await store.append(pid, [deposit(2)], expected=1)
    assert info.value.actual == 2
    amounts = [e.event.amount_cents for e in (await store.load(pid)).events]  # type: ignore[attr-defined]
    assert amounts == [1, 99]


async def test_every_attempt_timing_out_raises_store_timeout(
    client: angzarr_es.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.store("player")

    async def never(*args: Any, **kwargs: Any) -> js.PubAck:
        raise angzarr_es.StoreTimeout("no ack")

    monkeypatch.setattr(client._wire, "publish_commit", never)
    with pytest.raises(angzarr_es.StoreTimeout):
        await store.append("p", [deposit(1)], expected=0)
    assert await store.next_sequence("p") == 0


async def test_a_lagging_replica_never_hides_our_own_append(
    client: angzarr_es.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.store("player")
    pid = uuid.uuid4()
    for i in range(5):
        await store.append(pid, [deposit(i)], expected=i)
    real = client._wire.reads.direct_batch

    async def lagging(stream: str, subject: str, start: int, batch: int, max_bytes: int) -> Any:
        # A follower that has only the first three commits.
        payloads, _, _ = await real(stream, subject, start, batch, max_bytes)
        return payloads[:3], 3, False

    monkeypatch.setattr(client._wire, "direct_batch", lagging)
    hist = await store.load(pid)
    assert [e.sequence for e in hist.events] == [0, 1, 2, 3, 4]
    assert hist.next_sequence == 5
    assert [e.sequence async for e in store.iter(pid)] == [0, 1, 2, 3, 4]
    assert (await stream_info(client))["state"]["consumer_count"] == 0


async def test_consumer_replay_leaves_no_consumer_behind(config: Config) -> None:
    nats = msgspec.structs.replace(config.nats, replay="consumer")
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
        assert (await stream_info(client))["state"]["consumer_count"] == 0
        await delete_stream(client, nats.stream_name)


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


async def test_a_commit_over_max_payload_is_refused_and_nothing_is_written(
    client: angzarr_es.Client,
) -> None:
    store = client.store("player")
    limit = client._wire.max_payload
    huge = player_pb2.FundsWithdrawn(reason="x" * limit)
    with pytest.raises(angzarr_es.AppendTooLarge) as info:
        await store.append("big", [huge], expected=0)
    assert info.value.limit == limit
    assert info.value.size > limit
    many = [player_pb2.FundsWithdrawn(reason="y" * 1000) for _ in range(limit // 1000)]
    with pytest.raises(angzarr_es.AppendTooLarge):
        await store.append("big", many, expected=0)
    assert await store.next_sequence("big") == 0
    res = await store.append("big", [player_pb2.FundsWithdrawn(reason="z" * 1000)], expected=0)
    assert res.next_sequence == 1


async def test_a_corrupt_payload_raises_codec_error_naming_subject_and_sequence(
    client: angzarr_es.Client,
) -> None:
    store = client.store("player")
    await store.append("bad", [deposit(1)], expected=0)
    subject = store.subject("bad")
    msg = await client._wire.mux.request(subject, b"\xff\xff\xff not protobuf")
    seq = js.pub_ack(msg.data).seq
    await client._wire.mux.request(subject, codec_book(2))
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
    await client._wire.mux.request(store.subject("u"), book.SerializeToString())
    hist = await store.load("u")
    event = hist.events[0]
    assert event.type_name == "some.future.EventV9"
    assert isinstance(event.event, any_pb2.Any)
    assert event.event.value == b"\x08\x2a"
    res = await store.append("u", [deposit(1)], expected=1)
    assert res.first_sequence == 1


async def test_provision_is_idempotent_and_applies_event_store_settings(
    client: angzarr_es.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="angzarr_es"):
        await client.provision()
        await client.provision()
    assert not [r for r in caplog.records if "updating stream" in r.message]
    cfg = (await stream_info(client))["config"]
    nats = client.config.nats
    assert cfg["subjects"] == [
        f"{nats.subject_prefix}.events.>",
        f"{nats.subject_prefix}.correlation.>",
    ]
    assert cfg["retention"] == "limits"
    assert cfg["storage"] == "file"
    assert cfg["max_msgs"] == -1
    assert cfg["max_bytes"] == -1
    assert cfg["max_age"] == 0
    assert cfg["max_msgs_per_subject"] == -1
    assert cfg["discard"] == "new"
    assert cfg["allow_direct"] is True
    assert cfg["allow_atomic"] is True
    assert cfg["deny_delete"] is True
    assert cfg["duplicate_window"] == 120 * 10**9


async def test_provision_repairs_a_stream_that_would_delete_events(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = fresh_config(nats_url)
    nats = config.nats
    async with await angzarr_es.connect(config=config) as client:
        bad = js.StreamConfig(
            name=nats.stream_name,
            subjects=[f"{nats.subject_prefix}.events.>"],
            max_age=7 * 24 * 3600 * 10**9,
            max_msgs_per_subject=10,
            discard="old",
            allow_direct=True,
        )
        await client._wire.js.call(f"$JS.API.STREAM.CREATE.{bad.name}", js.encode(bad))
        await client.store("player").append("kept", [deposit(1)], expected=0)
        with caplog.at_level(logging.WARNING, logger="angzarr_es"):
            await client.provision()
        assert any("max_age" in r.message for r in caplog.records)
        cfg = (await stream_info(client))["config"]
        assert (cfg["max_age"], cfg["max_msgs_per_subject"], cfg["discard"]) == (0, -1, "new")
        assert await client.store("player").next_sequence("kept") == 1
        await delete_stream(client, nats.stream_name)


async def test_provision_refuses_a_memory_stream(nats_url: str) -> None:
    config = fresh_config(nats_url)
    nats = config.nats
    async with await angzarr_es.connect(config=config) as client:
        bad = js.StreamConfig(
            name=nats.stream_name,
            subjects=[f"{nats.subject_prefix}.events.>"],
            storage="memory",
        )
        await client._wire.js.call(f"$JS.API.STREAM.CREATE.{bad.name}", js.encode(bad))
        with pytest.raises(angzarr_es.StreamConfigError, match="storage"):
            await client.provision()
        await delete_stream(client, nats.stream_name)


async def test_a_configured_max_age_warns_that_events_will_be_deleted(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = fresh_config(nats_url, max_age=3600.0)
    with caplog.at_level(logging.WARNING, logger="angzarr_es"):
        config.validate()
    assert any("DELETE" in r.message for r in caplog.records)


async def test_provision_refuses_a_server_that_is_too_old(
    client: angzarr_es.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(type(client._wire), "server_version", property(lambda self: (2, 10, 22)))
    with pytest.raises(angzarr_es.ServerTooOld, match=r"2\.11"):
        await client.provision()


async def test_appending_without_a_stream_says_so(config: Config) -> None:
    async with await angzarr_es.connect(config=config) as client:
        store = client.store("player")
        with pytest.raises(angzarr_es.StoreUnavailable, match="provision"):
            await store.append("x", [deposit(1)], expected=0)
        # Reads and lookups name the missing stream (a 503 alone read as transient).
        missing = f"stream {config.nats.stream_name} does not exist.*provision"
        with pytest.raises(angzarr_es.StoreUnavailable, match=missing):
            await store.load("x")
        with pytest.raises(angzarr_es.StoreUnavailable, match=missing):
            await store.append("x", [deposit(1)], expected=1)
        with pytest.raises(angzarr_es.StoreUnavailable, match=missing):
            await store.next_sequence("x")
        with pytest.raises(angzarr_es.StoreUnavailable, match=missing):
            await client.events_by_correlation("wf")  # was {}: "no events"
        # Failures together share one probe (an election must not cost one per read).
        wire = client._wire
        asked: list[str] = []
        real = wire.mux.request

        async def counting(subject: str, *args: Any, **kwargs: Any) -> Any:
            asked.append(subject)
            return await real(subject, *args, **kwargs)

        wire.reads._probes.clear()
        wire.mux.request = counting  # type: ignore[method-assign]
        got = await asyncio.gather(
            *(store.load(f"y{i}") for i in range(20)), return_exceptions=True
        )
        assert all(isinstance(e, angzarr_es.StoreUnavailable) for e in got), got
        assert sum(s.startswith("$JS.API.STREAM.INFO.") for s in asked) == 1


async def test_connect_with_a_url_ignores_a_bad_nats_url(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATS_URL", "http://not-nats:4222")
    async with await angzarr_es.connect(nats_url) as client:  # `url` replaces NATS_URL
        assert client._wire.nc.is_connected
    with pytest.raises(angzarr_es.ConfigError, match=r"^connect\(url=\.\.\.\): .*'https'"):
        await angzarr_es.connect("https://x:4222")


async def test_an_unreachable_server_is_store_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(angzarr_es.StoreUnavailable, match=str(port)):
        await angzarr_es.connect(f"nats://127.0.0.1:{port}")


async def test_a_closed_client_raises_store_unavailable(client: angzarr_es.Client) -> None:
    store = client.store("player")
    await client.close()
    with pytest.raises(angzarr_es.StoreUnavailable):
        await store.append("x", [deposit(1)], expected=0)
    with pytest.raises(angzarr_es.StoreUnavailable):
        await store.load("x")


async def test_deleting_an_edition_without_its_snapshot_stream_deletes_nothing(
    client: angzarr_es.Client,
) -> None:
    """Events were purged first, then the missing snapshot stream failed the
    call: the edition was left half deleted (a review)."""
    await client.provision()
    what_if = client.store("player", edition="what-if")
    await what_if.append("x", [deposit(1)], expected=0)
    cfg = client.config.nats
    await client._wire.js.call(f"$JS.API.STREAM.DELETE.{cfg.snapshot_stream}")
    with pytest.raises(angzarr_es.StoreError, match="provision"):
        await client.delete_edition("what-if")
    assert [e.sequence for e in (await what_if.load("x")).events] == [0]
