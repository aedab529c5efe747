"""JetStream specifics of snapshots: the snapshot stream, what a snapshot message
holds, and where a snapshot load starts reading."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest

import angzarr_es
from angzarr_es.config import Config
from angzarr_es.pb import core_pb2, player_pb2
from angzarr_es.testing import faults
from angzarr_es.testing.faults import Batch, BatchForward, Forward, Reply, Request
from tests.support import jsadmin
from tests.support.configs import fresh_config
from tests.support.events import deposit
from tests.support.jsadmin import messages as js


@pytest.fixture(params=["direct", "consumer"])
async def replay_client(
    request: pytest.FixtureRequest, nats_url: str
) -> AsyncIterator[angzarr_es.Client]:
    config = fresh_config(nats_url, replay=request.param, snapshot_history=2)
    async with await angzarr_es.connect(config=config) as client:
        await client.provision()
        yield client
        await jsadmin.delete_stream(client, config.nats.stream_name)
        await jsadmin.delete_stream(client, config.nats.snapshot_stream)


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
    ack = await jsadmin.publish(
        client, subject, snap.SerializeToString(), {"Angzarr-Commit-Sequence": "abc"}
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
    starts: list[int] = []

    async def replay_start(request: Request, forward: Forward) -> Reply:
        if faults.operation(request) == "CONSUMER.CREATE":
            starts.append(msgspec.json.decode(request.payload)["config"]["opt_start_seq"])
        return await forward(request)

    async def batch_start(request: Request, forward: BatchForward) -> Batch:
        if faults.operation(request) == "DIRECT.GET":
            starts.append(msgspec.json.decode(request.payload)["seq"])
        return await forward(request)

    client.clear_cache()  # a cold load (the appends made "p" a cached aggregate)
    with faults.intercept(client, on_request=replay_start, on_batch=batch_start):
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
    cfg = (await jsadmin.stream_info_json(client, nats.snapshot_stream))["config"]
    assert cfg["subjects"] == [f"{nats.subject_prefix}.snapshots.>"]
    assert cfg["max_msgs_per_subject"] == 3
    assert cfg["allow_direct"] is True
    store = client.store("player")
    await store.append("p", [deposit(i) for i in range(6)], expected=0)
    for seq in range(6):
        await store.save_snapshot("p", player_pb2.PlayerState(balance_cents=seq), seq)
    state = (
        await jsadmin.stream_info_json(
            client, nats.snapshot_stream, subjects_filter=f"{nats.subject_prefix}.snapshots.>"
        )
    )["state"]
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
    got = js.msg_get(
        await jsadmin.get_message(
            client,
            nats.snapshot_stream,
            last_by_subj=f"{nats.subject_prefix}.snapshots.player.p.what-if",
        )
    ).message
    assert got is not None
    snap = core_pb2.Snapshot.FromString(got.data)
    assert snap.sequence == 0
    assert snap.state.type_url == "type.googleapis.com/examples.player.PlayerState"
    assert snap.retention == core_pb2.RETENTION_DEFAULT
    assert snap.HasField("created_at")


async def test_a_snapshot_angzarr_wrote_without_created_at_loads(
    client: angzarr_es.Client,
) -> None:
    store = client.store("player")
    await store.append("p", [deposit(1)], expected=0)
    snap = core_pb2.Snapshot(sequence=0, retention=core_pb2.RETENTION_TRANSIENT)
    snap.state.Pack(player_pb2.PlayerState(name="Ann"))
    subject = f"{client.config.nats.subject_prefix}.snapshots.player.p"
    ack = await jsadmin.publish(client, subject, snap.SerializeToString(), {})
    assert ack.error is None
    hist = await store.load("p", snapshot=True)
    assert hist.snapshot is not None
    assert hist.snapshot.state == player_pb2.PlayerState(name="Ann")
    assert (hist.snapshot.retention, hist.snapshot.created_at) == (
        core_pb2.RETENTION_TRANSIENT,
        None,
    )
