"""Appending to the JetStream store: racing writers, lost acks and their
retries, conflicts known from the cache or from a stale position, and the
size limit."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import msgspec
import pytest

import angzarr_es
from angzarr_es.config import Config
from angzarr_es.pb import player_pb2
from angzarr_es.testing import faults
from angzarr_es.testing.faults import Batch, BatchForward, Forward, Reply, Request
from tests.support.events import deposit
from tests.support.wirefaults import (
    DROP_REPLY,
    LOSE,
    Fault,
    WireFaults,
    ack_of,
    is_commit,
    last_by_subject,
)


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
    # That no turn is kept once a subject is idle: tests/unit/test_cache.py.


async def test_a_conflict_known_from_the_cache_raises_without_publishing(
    client: angzarr_es.Client,
) -> None:
    store = client.store("player")
    pid = uuid.uuid4()
    await store.append(pid, [deposit(1), deposit(2)], expected=0)
    published: list[str] = []

    async def spy(request: Request, forward: Forward) -> Reply:
        if is_commit(client, request):
            published.append(request.subject)
        return await forward(request)

    with faults.intercept(client, on_request=spy), pytest.raises(angzarr_es.ConcurrencyError):
        await store.append(pid, [deposit(3)], expected=1)
    assert published == []


async def test_load_then_append_costs_one_round_trip(client: angzarr_es.Client) -> None:
    store = client.store("player")
    pid = uuid.uuid4()
    await store.append(pid, [deposit(1)], expected=0)
    await store.load(pid)
    calls: list[str] = []

    async def request(request: Request, forward: Forward) -> Reply:
        calls.append("request")
        return await forward(request)

    async def batch(request: Request, forward: BatchForward) -> Batch:
        calls.append("batch")
        return await forward(request)

    with faults.intercept(client, on_request=request, on_batch=batch):
        await store.append(pid, [deposit(2)], expected=1)
    assert calls == ["request"]


async def test_a_lost_ack_is_retried_without_writing_twice(client: angzarr_es.Client) -> None:
    store = client.store("player")
    pid = uuid.uuid4()
    await store.append(pid, [deposit(1)], expected=0)
    attempts: list[dict[str, Any]] = []

    async def lose_first_ack(request: Request, forward: Forward) -> Reply:
        reply = await forward(request)  # the commit IS stored...
        if is_commit(client, request):
            attempts.append(ack_of(reply))
            if len(attempts) == 1:
                raise angzarr_es.StoreTimeout("ack lost")  # ...but the caller never hears
        return reply

    with faults.intercept(client, on_request=lose_first_ack):
        res = await store.append(pid, [deposit(2), deposit(3)], expected=1)
    assert (res.first_sequence, res.next_sequence) == (1, 3)
    assert len(attempts) == 2
    # Single server: the retry is refused by the expected-sequence check (10071)
    # or recognised as a duplicate; either way it is reported as our success.
    second = attempts[1]
    assert second.get("duplicate") or second.get("error", {}).get("err_code") == 10071
    assert res.stream_sequence == attempts[0]["seq"]
    hist = await store.load(pid)
    assert [e.event.amount_cents for e in hist.events] == [1, 2, 3]  # type: ignore[attr-defined]


async def test_a_lost_ack_then_a_real_conflict_is_still_a_conflict(
    client: angzarr_es.Client, config: Config
) -> None:
    store = client.store("player")
    pid = uuid.uuid4()
    await store.append(pid, [deposit(1)], expected=0)
    async with await angzarr_es.connect(config=config) as other:
        calls = 0

        async def other_wins_while_ack_lost(request: Request, forward: Forward) -> Reply:
            nonlocal calls
            if is_commit(client, request):
                calls += 1
                if calls == 1:
                    # Our first attempt never reaches the server; another writer wins.
                    await other.store("player").append(pid, [deposit(99)], expected=1)
                    raise angzarr_es.StoreTimeout("request lost")
            return await forward(request)

        with (
            faults.intercept(client, on_request=other_wins_while_ack_lost),
            pytest.raises(angzarr_es.ConcurrencyError) as info,
        ):
            await store.append(pid, [deposit(2)], expected=1)
    assert info.value.actual == 2
    amounts = [e.event.amount_cents for e in (await store.load(pid)).events]  # type: ignore[attr-defined]
    assert amounts == [1, 99]


async def test_every_attempt_timing_out_raises_store_timeout(client: angzarr_es.Client) -> None:
    store = client.store("player")

    async def never(request: Request, forward: Forward) -> Reply:
        if is_commit(client, request):
            raise angzarr_es.StoreTimeout("no ack")
        return await forward(request)

    with faults.intercept(client, on_request=never), pytest.raises(angzarr_es.StoreTimeout):
        await store.append("p", [deposit(1)], expected=0)
    assert await store.next_sequence("p") == 0


async def test_a_commit_over_max_payload_is_refused_and_nothing_is_written(
    client: angzarr_es.Client,
) -> None:
    store = client.store("player")
    limit = client.max_payload
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


async def test_a_lost_ack_retry_never_claims_an_identical_rival_commit(
    client: angzarr_es.Client, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same command, same clock tick: the two writers' commits are byte-identical,
    # so only the per-call Nats-Msg-Id tells them apart.
    tick = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    async with (
        await angzarr_es.connect(config=config, clock=lambda: tick) as first,
        await angzarr_es.connect(config=config, clock=lambda: tick) as other,
    ):
        a = first.store("player")
        await a.append("p", [deposit(1)], expected=0)
        b = other.store("player")
        await b.load("p")
        calls = 0

        async def first_attempt_lost(request: Request, forward: Forward) -> Reply:
            nonlocal calls
            if is_commit(other, request):
                calls += 1
                if calls == 1:  # B's request never arrives; A wins the slot
                    await a.append("p", [deposit(10)], expected=1)
                    raise angzarr_es.StoreTimeout("lost")
            return await forward(request)

        with (
            faults.intercept(other, on_request=first_attempt_lost),
            pytest.raises(angzarr_es.ConcurrencyError) as info,
        ):
            await b.append("p", [deposit(10)], expected=1)
    assert info.value.actual == 2
    stored = (await client.store("player").load("p")).events
    assert [e.event.amount_cents for e in stored] == [1, 10]  # type: ignore[attr-defined]
    assert {e.created_at for e in stored} == {tick}  # every commit stamped by the clock


async def test_an_empty_append_double_checks_a_lagging_answer_with_the_leader(
    client: angzarr_es.Client,
) -> None:
    store = client.store("player")
    for i in range(6):
        await store.append("e", [deposit(i)], expected=i)
    async with await angzarr_es.connect(config=client.config) as other:
        lagged = 0

        async def lagging(request: Request, forward: Forward) -> Reply:
            nonlocal lagged
            target = last_by_subject(request)
            if target is None:
                return await forward(request)
            # A follower that has only four commits answers with its last.
            lagged += 1
            stream, subject = target
            body = msgspec.json.encode({"seq": 4, "next_by_subj": subject})
            return await forward(Request(f"$JS.API.DIRECT.GET.{stream}", body, None, request.what))

        with faults.intercept(other, on_request=lagging):
            res = await other.store("player").append("e", [], expected=6)
        assert (res.first_sequence, res.next_sequence) == (6, 6)
        assert lagged


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


BUSY = 1000
"""Commits of the duplicate window a keyed retry's search reads at most
(docs/design.md, "Append" 7)."""


async def test_a_keyed_retry_finds_its_commit_behind_a_busy_window(
    client: angzarr_es.Client, config: Config
) -> None:
    """Found by the nemesis (issue 20): a keyed command whose calls all ended
    in StoreTimeout, retried with its key and `expected` once the aggregate
    had moved on, was refused with ConcurrencyError although its commit was
    stored: the key was looked for among the first 1,000 commits (BUSY) of the
    duplicate window only, and a busy shared aggregate had more. The retry now
    reads the commit at `expected` first: where every attempt of the same
    command would have landed."""
    store = client.store("player")
    async with await angzarr_es.connect(config=config) as other:
        rival = other.store("player")
        for i in range(BUSY):  # as many commits in the window as the search reads
            await rival.append("busy", [deposit(i)], expected=i)
        faults = WireFaults(client).add(
            Fault("publish", 1, DROP_REPLY),  # stored, ack lost
            Fault("publish", 2, LOSE),
            Fault("publish", 3, LOSE),
            Fault("msg_get", 1, LOSE),  # and the check for it fails
        )
        with pytest.raises(angzarr_es.StoreTimeout):
            await store.append("busy", [deposit(BUSY)], expected=BUSY, idempotency_key="cmd")
        faults.restore()
        await rival.append("busy", [deposit(BUSY + 1)], expected=BUSY + 1)
    again = await store.append("busy", [deposit(BUSY)], expected=BUSY, idempotency_key="cmd")
    assert (again.first_sequence, again.next_sequence, again.duplicate) == (BUSY, BUSY + 1, True)
    amounts = [e.event.amount_cents for e in (await store.load("busy")).events]  # type: ignore[attr-defined]
    assert amounts == list(range(BUSY + 2))
