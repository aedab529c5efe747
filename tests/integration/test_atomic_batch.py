"""The wire's atomic batch publish, and Direct Get pages with stream sequences,
against a real nats-server (the answers the eventsourcing module relies on)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from angzarr_es._nats import Wire
from angzarr_es._nats import errors as table
from angzarr_es._nats import messages as m
from angzarr_es.config import NatsConfig


@pytest.fixture
async def wire(nats_url: str) -> AsyncIterator[Wire]:
    w = await Wire.connect(NatsConfig(url=nats_url))
    yield w
    await w.close()


@pytest.fixture
async def stream(wire: Wire) -> AsyncIterator[str]:
    name = f"batch-{uuid.uuid4().hex[:10]}"
    config = m.StreamConfig(name=name, subjects=[f"{name}.>"], allow_atomic=True, allow_direct=True)
    await wire.js.stream_put(config, create=True)
    yield name
    await wire.js.stream_delete(name)


def expect(seq: int) -> dict[str, str]:
    return {m.H_EXPECTED_LAST_SUBJECT_SEQ: str(seq)}


async def last_seq(wire: Wire, stream: str) -> int:
    info = await wire.js.stream_info(stream)
    assert info is not None
    return info.state.last_seq


async def test_a_batch_is_stored_whole_with_consecutive_sequences(wire: Wire, stream: str) -> None:
    a, b = f"{stream}.a", f"{stream}.b"
    ack = await wire.publish_batch(
        [(a, b"1", {**expect(0), m.H_MSG_ID: "x1"}), (b, b"2", expect(0)), (a, b"3", {})], 2.0
    )
    assert ack.error is None
    assert (ack.seq, ack.count) == (3, 3)
    page, last, more = await wire.reads.direct_sequenced(stream, f"{stream}.*", 1, 10, 1 << 20)
    assert page == [(1, b"1"), (2, b"2"), (3, b"3")]
    assert (last, more) == (3, False)


async def test_a_resent_batch_is_refused_whole(wire: Wire, stream: str) -> None:
    batch = [(f"{stream}.a", b"1", {m.H_MSG_ID: "once"}), (f"{stream}.a", b"2", {})]
    assert (await wire.publish_batch(batch, 2.0)).error is None
    again = await wire.publish_batch(batch, 2.0)
    assert again.error is not None
    assert again.error.err_code == table.BATCH_DUPLICATE_MSG_ID
    assert await last_seq(wire, stream) == 2


async def test_a_stale_expected_sequence_refuses_the_batch_and_uses_no_sequence(
    wire: Wire, stream: str
) -> None:
    await wire.publish_commit(stream, f"{stream}.b", b"0", {}, 2.0)
    ack = await wire.publish_batch(
        [(f"{stream}.a", b"1", expect(0)), (f"{stream}.b", b"2", expect(0))], 2.0
    )
    assert ack.error is not None
    assert ack.error.err_code in table.CONFLICT_CODES
    assert await last_seq(wire, stream) == 1
    ack = await wire.publish_batch(
        [(f"{stream}.a", b"1", expect(0)), (f"{stream}.b", b"2", expect(1))], 2.0
    )
    assert (ack.error, ack.seq) == (None, 3)


async def test_a_stream_without_allow_atomic_says_so(wire: Wire) -> None:
    name = f"plain-{uuid.uuid4().hex[:10]}"
    await wire.js.stream_put(m.StreamConfig(name=name, subjects=[f"{name}.>"]), create=True)
    try:
        ack = await wire.publish_batch([(f"{name}.a", b"1", {}), (f"{name}.a", b"2", {})], 2.0)
        assert ack.error is not None
        err = ack.error.as_error("insert")
        assert err.err_code == table.ATOMIC_PUBLISH_DISABLED
        assert "allow_atomic" in str(err)
    finally:
        await wire.js.stream_delete(name)


async def test_sequenced_pages_say_whether_more_follow(wire: Wire, stream: str) -> None:
    for i in range(5):
        await wire.publish_commit(stream, f"{stream}.e.{i % 2}", b"%d" % i, {}, 2.0)
        await wire.publish_commit(stream, f"{stream}.other", b"x", {}, 2.0)
    page, last, more = await wire.reads.direct_sequenced(stream, f"{stream}.e.*", 1, 3, 1 << 20)
    assert [seq for seq, _ in page] == [1, 3, 5]
    assert (last, more) == (5, True)
    page, last, more = await wire.reads.direct_sequenced(stream, f"{stream}.e.*", 6, 3, 1 << 20)
    assert [seq for seq, _ in page] == [7, 9]
    assert more is False
    assert await wire.reads.direct_sequenced(stream, f"{stream}.e.*", 11, 3, 1 << 20) == (
        [],
        0,
        False,
    )
