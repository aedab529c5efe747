"""JetStream specifics of snapshots, the correlation index and editions: what
lands in which stream, and which requests a load makes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

import angzarr_es
from angzarr_es._nats import messages as js
from angzarr_es.config import Config
from angzarr_es.pb import core_pb2, player_pb2
from tests.conftest import delete_stream, fresh_config


def deposit(cents: int) -> player_pb2.FundsDeposited:
    return player_pb2.FundsDeposited(amount_cents=cents, currency="EUR")


async def info(client: angzarr_es.Client, stream: str, subjects: str = "") -> dict[str, Any]:
    body = msgspec.json.encode({"subjects_filter": subjects}) if subjects else b""
    reply: dict[str, Any] = msgspec.json.decode(
        await client._wire.js.call(f"$JS.API.STREAM.INFO.{stream}", body)
    )
    return reply


async def messages(client: angzarr_es.Client) -> int:
    state = (await info(client, client.config.nats.stream_name))["state"]
    return int(state["messages"])


async def index_entries(client: angzarr_es.Client) -> dict[str, int]:
    prefix = client.config.nats.subject_prefix
    reply = await info(client, client.config.nats.stream_name, f"{prefix}.correlation.>")
    return dict(reply["state"].get("subjects") or {})


# -- correlation ---------------------------------------------------------------


async def test_commits_without_a_correlation_id_are_one_message_each(
    client: angzarr_es.Client,
) -> None:
    store = client.store("player")
    for n in range(5):
        await store.append("p", [deposit(n)], expected=n)
    assert await messages(client) == 5
    assert await index_entries(client) == {}


@pytest.mark.parametrize("bad", [uuid.UUID(int=7), 42, b"wf"])
async def test_a_correlation_id_that_is_not_a_str_is_refused(
    client: angzarr_es.Client, bad: object
) -> None:
    store = client.store("player")
    with pytest.raises(TypeError, match="correlation_id must be a str"):
        await store.append("p", [deposit(1)], expected=0, correlation_id=bad)  # type: ignore[arg-type]
    assert await messages(client) == 0


async def test_a_correlated_commit_is_preceded_by_its_index_entry(
    client: angzarr_es.Client,
) -> None:
    store = client.store("player")
    res = await store.append("p", [deposit(1), deposit(2)], expected=0, correlation_id="wf.1")
    await store.append("p", [deposit(3)], expected=2)
    assert await messages(client) == 3
    prefix = client.config.nats.subject_prefix
    entry_subject = f"{prefix}.correlation.~d2YuMQ"
    assert await index_entries(client) == {entry_subject: 1}
    entry = await client._wire.reads.leader_next(client.config.nats.stream_name, entry_subject, 1)
    assert entry is not None
    assert entry[1] < res.stream_sequence
    assert msgspec.json.decode(entry[0]) == [store.subject("p"), 0]


async def test_a_refused_correlated_commit_is_not_reported(client: angzarr_es.Client) -> None:
    store = client.store("player")
    await store.append("p", [deposit(1)], expected=0, correlation_id="wf")
    async with await angzarr_es.connect(config=client.config) as other:
        await other.store("player").append("p", [deposit(2)], expected=1, correlation_id="wf")
    assert await messages(client) == 4
    # Our cached position is stale, so the commit reaches the server, which
    # refuses it: its entry stays behind, pointing at someone else's commit.
    with pytest.raises(angzarr_es.ConcurrencyError) as info_:
        await store.append("p", [deposit(3)], expected=1, correlation_id="wf")
    assert info_.value.actual == 2
    assert await messages(client) == 5
    assert list((await index_entries(client)).values()) == [3]
    found = await client.events_by_correlation("wf")
    assert [e.sequence for e in found[("player", "p")]] == [0, 1]


async def test_entries_without_a_landed_commit_yield_nothing(client: angzarr_es.Client) -> None:
    from angzarr_es.store import _correlation

    store = client.store("player")
    prefix = client.config.nats.subject_prefix
    entry = _correlation.index_subject(prefix, "wf")
    # A writer that died between its entry and its commit...
    await _correlation.write_entry(client._wire, entry, store.subject("p"), 0)
    assert await client.events_by_correlation("wf") == {}
    # ...and the commit that later took that slot under another workflow.
    await store.append("p", [deposit(1)], expected=0, correlation_id="other")
    assert await client.events_by_correlation("wf") == {}
    # An entry naming the right slot but a commit of another workflow.
    await _correlation.write_entry(client._wire, entry, store.subject("p"), 1)
    await store.append("p", [deposit(2)], expected=1)
    assert await client.events_by_correlation("wf") == {}
    # Garbage on the index subject is skipped.
    await client._wire.publish_commit(entry, b"not an entry", {}, 2.0)
    await store.append("p", [deposit(3)], expected=2, correlation_id="wf")
    found = await client.events_by_correlation("wf")
    assert {k: [e.sequence for e in v] for k, v in found.items()} == {("player", "p"): [2]}


async def test_a_correlated_append_with_expected_any_retries_after_a_race(
    client: angzarr_es.Client,
) -> None:
    store = client.store("player")
    await store.append("p", [deposit(1)], expected=0)
    async with await angzarr_es.connect(config=client.config) as other:
        await other.store("player").append("p", [deposit(2)], expected=1)
    # Our cache still says 1: the batch is refused, re-read and retried at 2.
    res = await store.append("p", [deposit(3)], expected=angzarr_es.ANY, correlation_id="wf")
    assert (res.first_sequence, res.next_sequence) == (2, 3)
    found = await client.events_by_correlation("wf")
    assert [e.sequence for e in found[("player", "p")]] == [2]
    assert await messages(client) == 5  # three commits, two entries (one dangling)


# -- snapshots -----------------------------------------------------------------


@pytest.fixture(params=["direct", "consumer"])
async def replay_client(
    request: pytest.FixtureRequest, nats_url: str
) -> AsyncIterator[angzarr_es.Client]:
    config = fresh_config(nats_url, replay=request.param, snapshot_history=2)
    async with await angzarr_es.connect(config=config) as client:
        await client.provision()
        yield client
        await delete_stream(client, config.nats.stream_name)
        await delete_stream(client, config.nats.snapshot_stream)


async def test_a_foreign_snapshot_header_is_a_codec_error(
    replay_client: angzarr_es.Client,
) -> None:
    client = replay_client
    store = client.store("player")
    await store.append("p", [deposit(1)], expected=0)
    subject = f"{client.config.nats.subject_prefix}.snapshots.player.p"
    state = player_pb2.PlayerState(balance_cents=1)
    snap = core_pb2.Snapshot(sequence=0)
    snap.state.Pack(state)
    ack = await client._wire.publish_commit(
        subject, snap.SerializeToString(), {"Angzarr-Commit-Sequence": "abc"}, 2.0
    )
    assert ack.error is None
    with pytest.raises(angzarr_es.CodecError, match="abc"):
        await store.load("p", snapshot=True)


async def test_a_snapshot_load_starts_at_the_covering_commit(
    replay_client: angzarr_es.Client,
) -> None:
    client = replay_client
    store = client.store("player")
    seqs = []
    for n in range(30):
        res = await store.append("p", [deposit(2 * n), deposit(2 * n + 1)], expected=2 * n)
        seqs.append(res.stream_sequence)
        await client.store("player").append(f"noise-{n}", [deposit(0)], expected=0)
    await store.save_snapshot("p", player_pb2.PlayerState(balance_cents=1), 41)
    wire = client._wire
    starts: list[int] = []
    direct_batch, consumer_replay = wire.reads.direct_batch, wire.replayer.replay

    async def spy_batch(stream: str, subject: str, start: int, *args: Any) -> Any:
        starts.append(start)
        return await direct_batch(stream, subject, start, *args)

    def spy_replay(stream: str, subject: str, start: int, batch: int) -> Any:
        starts.append(start)
        return consumer_replay(stream, subject, start, batch)

    wire.reads.direct_batch = spy_batch  # type: ignore[method-assign,assignment]
    wire.replayer.replay = spy_replay  # type: ignore[method-assign]
    hist = await store.load("p", snapshot=True)
    assert [e.sequence for e in hist.events] == list(range(42, 60))
    assert hist.next_sequence == 60
    # Event 41 is in the 21st commit: the read starts there, not at 1.
    assert starts[0] == seqs[20]
    starts.clear()
    await store.load("p")
    assert starts[0] == 1


async def test_the_snapshot_stream_keeps_the_latest_plus_history(
    replay_client: angzarr_es.Client,
) -> None:
    client = replay_client
    nats = client.config.nats
    assert nats.snapshot_stream == f"{nats.stream_name}-snapshots"
    cfg = (await info(client, nats.snapshot_stream))["config"]
    assert cfg["subjects"] == [f"{nats.subject_prefix}.snapshots.>"]
    assert cfg["max_msgs_per_subject"] == 3
    assert cfg["allow_direct"] is True
    store = client.store("player")
    await store.append("p", [deposit(i) for i in range(6)], expected=0)
    for seq in range(6):
        await store.save_snapshot("p", player_pb2.PlayerState(balance_cents=seq), seq)
    state = (await info(client, nats.snapshot_stream, f"{nats.subject_prefix}.snapshots.>"))[
        "state"
    ]
    assert state["subjects"] == {f"{nats.subject_prefix}.snapshots.player.p": 3}
    hist = await store.load("p", snapshot=True)
    assert hist.snapshot is not None
    assert hist.snapshot.state == player_pb2.PlayerState(balance_cents=5)


def test_the_default_snapshot_stream_is_angzarr_snapshots() -> None:
    assert Config().nats.snapshot_stream == "angzarr-snapshots"
    named = msgspec.structs.replace(Config().nats, snapshot_stream_name="snaps")
    assert named.snapshot_stream == "snaps"


async def test_a_stored_snapshot_is_a_core_snapshot_message(client: angzarr_es.Client) -> None:
    store = client.store("player", "what-if")
    await store.append("p", [deposit(1)], expected=0)
    await store.save_snapshot("p", player_pb2.PlayerState(name="Ann"), 0)
    nats = client.config.nats
    got = await client._wire.reads.direct_last(
        nats.snapshot_stream, f"{nats.subject_prefix}.snapshots.player.p.what-if"
    )
    assert got is not None
    snap = core_pb2.Snapshot.FromString(got[0])
    assert snap.sequence == 0
    assert snap.state.type_url == "/examples.player.PlayerState"


# -- editions ------------------------------------------------------------------


async def test_edition_commits_are_outside_the_main_timeline_filter(
    client: angzarr_es.Client,
) -> None:
    nats = client.config.nats
    await client.store("player").append("p", [deposit(1)], expected=0)
    await client.store("player", "what-if").append("p", [deposit(2)], expected=0)
    main = await info(client, nats.stream_name, f"{nats.subject_prefix}.events.player.*")
    assert list(main["state"]["subjects"]) == [f"{nats.subject_prefix}.events.player.p"]
    everything = await info(client, nats.stream_name, f"{nats.subject_prefix}.events.player.>")
    assert sorted(everything["state"]["subjects"]) == [
        f"{nats.subject_prefix}.events.player.p",
        f"{nats.subject_prefix}.events.player.p.what-if",
    ]
    hist = await client.store("player", "what-if").load("p")
    assert [e.event for e in hist.events] == [deposit(2)]


async def test_the_event_stream_denies_deletes_but_allows_the_edition_purge(
    client: angzarr_es.Client,
) -> None:
    cfg = (await info(client, client.config.nats.stream_name))["config"]
    assert cfg["deny_delete"] is True
    assert cfg.get("deny_purge", False) is False
    nats = client.config.nats
    body = js.encode(js.MsgGetRequest(seq=1))
    await client.store("player", "x").append("p", [deposit(1)], expected=0)
    reply = msgspec.json.decode(
        await client._wire.js.call(f"$JS.API.STREAM.MSG.DELETE.{nats.stream_name}", body)
    )
    assert reply["error"]["code"] >= 400
    assert await client.delete_edition("x") == 1


async def test_another_process_recovers_after_an_edition_is_deleted(
    client: angzarr_es.Client,
) -> None:
    async with await angzarr_es.connect(config=client.config) as other:
        theirs = other.store("player", "what-if")
        await theirs.append("p", [deposit(1), deposit(2)], expected=0)
        assert await theirs.next_sequence("p") == 2  # their cache is warm
        assert await client.delete_edition("what-if") == 1
        hist = await theirs.load("p")
        assert (hist.events, hist.next_sequence) == ([], 0)
        assert await theirs.next_sequence("p") == 0
        res = await theirs.append("p", [deposit(3)], expected=0)
        assert (res.first_sequence, res.next_sequence) == (0, 1)
        assert [e.event for e in (await theirs.load("p")).events] == [deposit(3)]
