"""Regressions for bugs an internal review reproduced against a real server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as real_dt
import types
import uuid
from typing import Any

import msgspec
import pytest

import angzarr_es
from angzarr_es import codec
from angzarr_es._nats import messages as js
from angzarr_es.config import Config
from angzarr_es.pb import player_pb2
from angzarr_es.store import _append as store_mod


def deposit(cents: int) -> player_pb2.FundsDeposited:
    return player_pb2.FundsDeposited(amount_cents=cents)


async def test_a_lost_ack_retry_never_claims_an_identical_rival_commit(
    client: angzarr_es.Client, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same command, same clock tick: the two writers' commits are byte-identical,
    # so only the per-call Nats-Msg-Id tells them apart.
    tick = real_dt.datetime(2026, 1, 1, tzinfo=real_dt.UTC)
    frozen = types.SimpleNamespace(
        UTC=real_dt.UTC, datetime=types.SimpleNamespace(now=lambda tz=None: tick)
    )
    monkeypatch.setattr(store_mod, "dt", frozen)
    a = client.store("player")
    await a.append("p", [deposit(1)], expected=0)
    async with await angzarr_es.connect(config=config) as other:
        b = other.store("player")
        await b.load("p")
        real = other._wire.publish_commit
        calls = 0

        async def first_attempt_lost(*args: Any, **kwargs: Any) -> js.PubAck:
            nonlocal calls
            calls += 1
            if calls == 1:  # B's request never arrives; A wins the slot
                await a.append("p", [deposit(10)], expected=1)
                raise angzarr_es.StoreTimeout("lost")
            return await real(*args, **kwargs)

        monkeypatch.setattr(other._wire, "publish_commit", first_attempt_lost)
        with pytest.raises(angzarr_es.ConcurrencyError) as info:
            await b.append("p", [deposit(10)], expected=1)
    assert info.value.actual == 2
    amounts = [e.event.amount_cents for e in (await a.load("p")).events]  # type: ignore[attr-defined]
    assert amounts == [1, 10]


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
        ack = js.pub_ack((await client._wire.mux.request(subject, payload, headers=headers)).data)
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


async def test_an_empty_append_double_checks_a_lagging_answer_with_the_leader(
    client: angzarr_es.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = client.store("player")
    for i in range(6):
        await store.append("e", [deposit(i)], expected=i)
    async with await angzarr_es.connect(config=client.config) as other:
        real = other._wire.reads.direct_last

        async def lagging(stream: str, subject: str) -> Any:
            # A follower that has only four commits.
            return await other._wire.reads.leader_next(stream, subject, 4)

        monkeypatch.setattr(other._wire, "direct_last", lagging)
        res = await other.store("player").append("e", [], expected=6)
        assert (res.first_sequence, res.next_sequence) == (6, 6)
        assert real is not None


async def test_a_cancelled_replay_leaves_no_consumer(config: Config) -> None:
    nats = msgspec.structs.replace(config.nats, replay="consumer")
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
        info = msgspec.json.decode(
            await client._wire.js.call(f"$JS.API.CONSUMER.NAMES.{nats.stream_name}")
        )
        names = info.get("consumers") or []
        # Deletion after a cancellation runs in the generator's cleanup; give
        # every pending cleanup the chance to finish before counting.
        assert await store.load("c")
        info = msgspec.json.decode(
            await client._wire.js.call(f"$JS.API.CONSUMER.NAMES.{nats.stream_name}")
        )
        left = info.get("consumers") or []
        assert left == [], names
        await client._wire.js.call(f"$JS.API.STREAM.DELETE.{nats.stream_name}")


async def test_a_stale_cached_stream_position_is_not_a_conflict(
    client: angzarr_es.Client, config: Config
) -> None:
    """Another process deletes an edition and rewrites the aggregate: our cache
    holds an old stream sequence for the same next sequence. The server refuses
    the first publish; the store must retry at the real position, not report a
    conflict whose actual equals expected."""
    ours = client.store("player", edition="what-if")
    await ours.append("r", [deposit(1)], expected=0)  # cached: next 1 at stream seq s
    async with await angzarr_es.connect(config=config) as other:
        await other.delete_edition("what-if")
        await other.store("player", edition="what-if").append("r", [deposit(2)], expected=0)
    res = await ours.append("r", [deposit(3)], expected=1)
    assert (res.first_sequence, res.next_sequence) == (1, 2)
    amounts = [e.event.amount_cents for e in (await ours.load("r")).events]  # type: ignore[attr-defined]
    assert amounts == [2, 3]
