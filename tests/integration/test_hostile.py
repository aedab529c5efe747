"""Hostile input against a real server, fuzzed with Hypothesis: ids and domains
with every class of character, huge ids and events, arbitrary bytes written to
aggregate subjects by someone else, unknown type URLs, and streams created by
someone else with settings that would lose events."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import msgspec
import pytest
from google.protobuf import any_pb2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import angzarr_es
from angzarr_es import ANY, CodecError, InvalidAggregateId, InvalidDomain, codec
from angzarr_es.pb import core_pb2, player_pb2
from angzarr_es.subjects import MAX_ID_BYTES
from tests.support import jsadmin
from tests.support.configs import fresh_config
from tests.support.jsadmin import messages as js

T = TypeVar("T")

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Env:
    """One event loop, stream and client for every example of a fuzz run."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.config = fresh_config(url)
        self.client = self.run(angzarr_es.connect(config=self.config))
        self.run(self.client.provision())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        try:
            self.run(jsadmin.delete_stream(self.client, self.config.nats.stream_name))
            self.run(self.client.close())
        finally:
            self.loop.close()

    def raw(self, subject: str, payload: bytes) -> int:
        """Publish `payload` to `subject` as a foreign writer would; its stream sequence."""
        ack = self.run(jsadmin.publish(self.client, subject, payload))
        assert ack.error is None, ack.error
        return ack.seq


@pytest.fixture(scope="module")
def env(nats_url: str) -> Iterator[Env]:
    e = Env(nats_url)
    yield e
    e.close()


def event(tag: str) -> player_pb2.FundsWithdrawn:
    return player_pb2.FundsWithdrawn(amount_cents=7, currency="EUR", reason=tag)


def book(first: int, n: int = 1, type_url: str = "", value: bytes = b"") -> bytes:
    """A commit a foreign writer might publish."""
    if type_url:
        b = core_pb2.EventBook()
        for i in range(n):
            page = b.pages.add()
            page.header.sequence = first + i
            page.event.type_url = type_url
            page.event.value = value
        b.next_sequence = first + n
        return b.SerializeToString()
    return codec.encode_commit(
        domain="player",
        root=b"x",
        first_sequence=first,
        events=[codec.pack(event(str(first + i))) for i in range(n)],
        correlation_id="",
        created_at=dt.datetime.now(dt.UTC),
    )


def id_bytes(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


# Every Unicode category, lone surrogates included, plus the NATS-special ones.
any_ids = st.one_of(
    st.text(st.characters(codec=None), min_size=1, max_size=80),
    st.text(st.sampled_from(".*> \t\r\n\x00~/\\%$#"), min_size=1, max_size=20),
    st.just("~"),
    st.just("~YQ"),  # what "a" would encode to: must not collide with "a"
).filter(lambda s: id_bytes(s) <= MAX_ID_BYTES)


@FUZZ
@given(root=any_ids, corr=st.text(max_size=50))
def test_any_aggregate_id_round_trips_on_its_own_subject(env: Env, root: str, corr: str) -> None:
    store = env.client.store("player")
    tag = uuid.uuid4().hex
    res = env.run(store.append(root, [event(tag)], expected=ANY, correlation_id=corr))
    hist = env.run(store.load(root))
    assert [e.sequence for e in hist.events] == list(range(res.next_sequence))
    assert hist.events[-1].event.reason == tag  # type: ignore[attr-defined]
    assert hist.events[-1].correlation_id == corr
    # Nothing else landed on its subject, whatever the id's characters.
    subject = store.subject(root)
    assert all(e.event.reason != "" for e in hist.events)  # type: ignore[attr-defined]
    assert subject.count(".") == 3


@FUZZ
@given(domain=st.text(st.characters(codec=None), max_size=140))
def test_any_domain_is_accepted_and_works_or_is_invalid_domain(env: Env, domain: str) -> None:
    try:
        store = env.client.store(domain)
    except InvalidDomain:
        return
    res = env.run(store.append("d", [event(domain)], expected=ANY))
    hist = env.run(store.load("d"))
    assert hist.events[-1].event.reason == domain  # type: ignore[attr-defined]
    assert hist.next_sequence == res.next_sequence


@pytest.mark.parametrize("unit", ["a", "é", "€", "😀", "\udc80"])
def test_ids_at_and_over_the_size_limit(env: Env, unit: str) -> None:
    store = env.client.store("player")
    per = id_bytes(unit)
    at_limit = unit * (MAX_ID_BYTES // per)
    env.run(store.append(at_limit, [event("big")], expected=0))
    assert [e.event.reason for e in env.run(store.load(at_limit)).events] == ["big"]  # type: ignore[attr-defined]
    with pytest.raises(InvalidAggregateId):
        env.run(store.append(at_limit + unit, [event("x")], expected=0))


def test_huge_events_up_to_max_payload(env: Env) -> None:
    store = env.client.store("player")
    limit = env.client.max_payload
    big = "x" * (limit - 4096)
    env.run(store.append("huge", [event(big)], expected=0))
    assert env.run(store.load("huge")).events[0].event.reason == big  # type: ignore[attr-defined]
    many = [event("y" * 1000) for _ in range((limit - 8192) // 1100)]
    env.run(store.append("huge", many, expected=1))
    with pytest.raises(angzarr_es.AppendTooLarge):
        env.run(store.append("huge", [event("z" * limit)], expected=1 + len(many)))
    with pytest.raises(angzarr_es.AppendTooLarge):
        env.run(store.append("huge", [*many, *many], expected=1 + len(many)))
    assert env.run(store.next_sequence("huge")) == 1 + len(many)


@FUZZ
@given(junk=st.binary(max_size=300))
def test_arbitrary_bytes_on_an_aggregate_subject(env: Env, junk: bytes) -> None:
    """A foreign message among the commits: the load is either a dense, correct
    history or a CodecError naming the subject and stream sequence; never a
    history with duplicated or missing sequences, never another exception."""
    store = env.client.store("player")
    root = uuid.uuid4().hex
    env.run(store.append(root, [event("0")], expected=0))
    seq = env.raw(store.subject(root), junk)
    env.raw(store.subject(root), book(1))
    try:
        hist = env.run(store.load(root))
    except CodecError as exc:
        failure: CodecError | None = exc
    else:
        failure = None
    if failure is not None:
        assert (failure.subject, failure.stream_sequence) == (store.subject(root), seq)
        return
    assert [e.sequence for e in hist.events] == list(range(len(hist.events)))
    assert hist.next_sequence == len(hist.events)


@pytest.mark.parametrize(
    "foreign",
    [b"", book(5), book(0), core_pb2.EventBook(next_sequence=7).SerializeToString()],
    ids=["empty", "gap", "repeat", "skip-ahead"],
)
def test_foreign_commits_that_break_density_raise_codec_error(env: Env, foreign: bytes) -> None:
    store = env.client.store("player")
    root = uuid.uuid4().hex
    env.run(store.append(root, [event("0")], expected=0))
    seq = env.raw(store.subject(root), foreign)
    with pytest.raises(CodecError) as info:
        env.run(store.load(root))
    assert info.value.stream_sequence == seq
    assert store.subject(root) in str(info.value)


NOT_COMMITS = {
    "empty": b"",
    "gap": core_pb2.EventBook(
        pages=[
            core_pb2.EventPage(header={"sequence": 1}),
            core_pb2.EventPage(header={"sequence": 3}),
        ]
    ).SerializeToString(),
    "skip-ahead": core_pb2.EventBook(
        pages=[core_pb2.EventPage(header={"sequence": 1})], next_sequence=7
    ).SerializeToString(),
}


@pytest.mark.parametrize("foreign", NOT_COMMITS.values(), ids=NOT_COMMITS.keys())
def test_appends_after_a_foreign_last_message_raise_codec_error(env: Env, foreign: bytes) -> None:
    """A message that is not a commit, last on an aggregate's subject, says
    nothing about where the aggregate stands: appending after it (at whatever
    it seems to say) would give events sequences the aggregate already has.
    Every writer, cached or fresh, gets a CodecError and nothing is written."""
    store = env.client.store("player")
    root = uuid.uuid4().hex
    subject = store.subject(root)
    env.run(store.append(root, [event("0")], expected=0))
    seq = env.raw(subject, foreign)
    fresh = env.run(angzarr_es.connect(config=env.config))
    try:
        for writer in (store, fresh.store("player")):
            for expected in (0, 1, ANY):
                with pytest.raises(CodecError) as info:
                    env.run(writer.append(root, [event("x")], expected=expected))
                assert info.value.stream_sequence == seq
        with pytest.raises(CodecError):
            env.run(fresh.store("player").next_sequence(root))
    finally:
        env.run(fresh.close())
    stream = env.config.nats.stream_name
    last = env.run(jsadmin.get_message(env.client, stream, last_by_subj=subject))
    assert msgspec.json.decode(last)["message"]["seq"] == seq  # nothing written after it


@FUZZ
@given(url=st.text(max_size=120), value=st.binary(max_size=40))
@example(url="\x00", value=b"")  # the decoder once used "\0" as its no-URL-yet sentinel
def test_unknown_or_hostile_type_urls(env: Env, url: str, value: bytes) -> None:
    store = env.client.store("player")
    root = uuid.uuid4().hex
    env.raw(store.subject(root), book(0, 2, type_url=url or "/", value=value))
    try:
        hist = env.run(store.load(root))
    except CodecError:
        return  # the URL named a known type and the bytes do not parse as it
    assert [e.sequence for e in hist.events] == [0, 1]
    for e in hist.events:
        assert e.type_name == (url or "/").rpartition("/")[2]
        if isinstance(e.event, any_pb2.Any):
            assert e.event.value == value
    env.run(store.append(root, [event("after")], expected=2))


# -- a stream someone else made ------------------------------------------------


async def _foreign_stream(nats_url: str, **settings: Any) -> tuple[angzarr_es.Client, Any]:
    config = fresh_config(nats_url)
    nats = config.nats
    client = await angzarr_es.connect(config=config)
    cfg = js.StreamConfig(
        name=nats.stream_name, subjects=[f"{nats.subject_prefix}.events.>"], **settings
    )
    reply = js.api_response(await jsadmin.create_stream(client, cfg))
    assert reply.error is None, reply.error
    return client, nats


async def _messages(client: angzarr_es.Client, name: str) -> int:
    info = js.stream_info(await jsadmin.stream_info(client, name))
    assert info.state is not None
    return info.state.messages


@pytest.mark.parametrize("retention", ["workqueue", "interest"])
async def test_provision_refuses_a_stream_that_consumes_events(
    nats_url: str, retention: str
) -> None:
    client, nats = await _foreign_stream(nats_url, retention=retention)
    try:
        await jsadmin.publish(client, client.store("player").subject("kept"), book(0))
        # An interest stream with no consumers has already dropped it.
        before = await _messages(client, nats.stream_name)
        assert before == (1 if retention == "workqueue" else 0)
        with pytest.raises(angzarr_es.StreamConfigError, match="retention"):
            await client.provision()
        assert await _messages(client, nats.stream_name) == before
    finally:
        await jsadmin.delete_stream(client, nats.stream_name)
        await client.close()


async def test_provision_repairs_limits_without_deleting_events(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, nats = await _foreign_stream(
        nats_url, max_msgs=50, max_bytes=10_000_000, discard="old", allow_direct=False
    )
    try:
        store = client.store("player")
        for i in range(40):  # written before the store arrives: no Direct Get yet
            await jsadmin.publish(client, store.subject(f"a{i}"), book(0))
        with caplog.at_level(logging.WARNING, logger="angzarr_es"):
            await client.provision()
        assert any("updating stream" in r.message for r in caplog.records)
        assert await _messages(client, nats.stream_name) == 40
        info = js.stream_info(await jsadmin.stream_info(client, nats.stream_name))
        assert info.config is not None
        assert (info.config["max_msgs"], info.config["discard"]) == (-1, "new")
        assert info.config["allow_direct"] is True
        for i in range(40):  # and now past the old limit of 50
            await store.append(f"a{i}", [event("more")], expected=1)
        assert await _messages(client, nats.stream_name) == 80
    finally:
        await jsadmin.delete_stream(client, nats.stream_name)
        await client.close()


async def test_provision_widens_a_stream_that_captures_one_domain(nats_url: str) -> None:
    config = fresh_config(nats_url)
    nats = config.nats
    async with await angzarr_es.connect(config=config) as client:
        cfg = js.StreamConfig(
            name=nats.stream_name, subjects=[f"{nats.subject_prefix}.events.player.>"]
        )
        await jsadmin.create_stream(client, cfg)
        await jsadmin.publish(client, client.store("player").subject("p"), book(0))
        await client.provision()
        await client.store("hand").append("h", [event("0")], expected=0)
        assert await _messages(client, nats.stream_name) == 2
        await jsadmin.delete_stream(client, nats.stream_name)


async def test_provision_names_another_stream_holding_our_subjects(nats_url: str) -> None:
    config = fresh_config(nats_url)
    nats = config.nats
    other = msgspec.structs.replace(nats, stream_name=nats.stream_name + "-other")
    async with await angzarr_es.connect(config=config) as client:
        cfg = js.StreamConfig(name=other.stream_name, subjects=[f"{nats.subject_prefix}.events.>"])
        await jsadmin.create_stream(client, cfg)
        await jsadmin.publish(client, client.store("player").subject("p"), book(0))
        with pytest.raises(angzarr_es.StreamConfigError, match="overlap") as raised:
            await client.provision()
        assert other.stream_name in str(raised.value)
        assert "per-domain" not in str(raised.value)  # not angzarr's streams: no such advice
        assert await _messages(client, other.stream_name) == 1
        await jsadmin.delete_stream(client, other.stream_name)
