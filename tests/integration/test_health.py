"""`Client.health()`: the typed summary `angzarr-es status` prints."""

from __future__ import annotations

import uuid

import msgspec

import angzarr_es
from angzarr_es._nats import messages as js
from angzarr_es.config import Config
from angzarr_es.embedded import EmbeddedServer
from angzarr_es.health import Health
from angzarr_es.pb import player_pb2
from tests.support import jsadmin
from tests.support.angzarr_bus import AngzarrBus, book
from tests.support.configs import with_nats


async def _durable(client: angzarr_es.Client, config: Config, name: str) -> None:
    stream = config.nats.stream_name
    consumer = js.ConsumerConfig(
        name=name,
        durable_name=name,
        ack_policy="explicit",
        filter_subject=f"{config.nats.subject_prefix}.events.player.*",
    )
    body = js.encode(js.ConsumerCreateRequest(stream_name=stream, config=consumer))
    reply = js.durable_info(await jsadmin.create_consumer(client, stream, name, body))
    assert reply.error is None


async def test_missing_stream_is_a_problem(config: Config) -> None:
    async with await angzarr_es.connect(config=config) as client:
        health = await client.health()
    assert health.reachable
    assert health.jetstream_enabled
    assert not health.ok
    assert health.stream is not None
    assert not health.stream.present
    assert health.problems == [
        f"stream {config.nats.stream_name} does not exist (run `angzarr-es provision`)"
    ]


async def test_stream_state_and_consumer_lag(client: angzarr_es.Client, config: Config) -> None:
    store = client.store("player")
    for i in range(5):
        await store.append(f"p{i}", [player_pb2.PlayerRegistered(name=str(i))], expected=0)
    await client.store("hand").append("h", [player_pb2.PlayerRegistered()], expected=0)
    await _durable(client, config, "player-projector")

    health = await client.health()
    assert health.ok, health.problems
    assert health.server_version == client.server_version
    assert health.rtt_ms is not None
    assert health.jetstream is not None
    assert health.jetstream.streams >= 1
    stream = health.stream
    assert stream is not None
    assert stream.present
    assert (stream.messages, stream.first_seq, stream.last_seq) == (6, 1, 6)
    assert stream.num_subjects == 6
    assert stream.consumer_count == 1
    assert stream.config_differences == {}
    (lag,) = [c for c in health.consumers if c.stream == config.nats.stream_name]
    assert lag.name == "player-projector"
    assert lag.durable
    assert lag.num_pending == 5  # the hand event is outside its filter
    assert lag.last_active is None

    lagging = await client.health(lag_threshold=4)
    assert lagging.problems == [
        f"consumer {config.nats.stream_name}/player-projector lags by 5 messages"
    ]


async def test_differing_settings_are_reported(client: angzarr_es.Client) -> None:
    seeded = msgspec.structs.replace(client.stream_config(), max_age=3600 * js.NANOS)
    await jsadmin.update_stream(client, seeded)
    health = await client.health()
    assert health.stream is not None
    assert health.stream.config_differences == {"max_age": "3600000000000 -> 0"}
    assert not health.ok


async def test_monitoring_endpoint_adds_server_stats() -> None:
    with EmbeddedServer() as server:
        async with await angzarr_es.connect(server.url) as client:
            await client.provision()
            health = await client.health(monitor_url=server.monitor_url)
            unreachable = await client.health(monitor_url="http://127.0.0.1:1")
            await jsadmin.delete_stream(client, client.config.nats.stream_name)
    assert health.ok, health.problems
    assert health.server is not None
    assert health.server.version == health.server_version
    assert health.server.connections >= 1
    assert any(c.name == "angzarr-es" for c in health.connections)
    assert health.jetstream is not None
    assert health.jetstream.server_max_storage is not None
    assert health.jetstream.server_max_storage > 0
    assert not unreachable.ok
    assert unreachable.server is None
    assert unreachable.problems[0].startswith("monitoring endpoint http://127.0.0.1:1: no answer")


async def test_unreachable_after_the_server_goes_away() -> None:
    server = EmbeddedServer().start()
    try:
        async with await angzarr_es.connect(server.url) as client:
            server.stop()
            health: Health = await client.health()
    finally:
        server.cleanup()
    assert not health.reachable
    assert not health.ok
    assert health.problems[0].startswith("server unreachable")


async def test_every_page_of_streams_and_consumers_is_read() -> None:
    # The JetStream API answers lists in pages of 256.
    with EmbeddedServer() as server:
        async with await angzarr_es.connect(server.url) as client:
            await client.provision()
            for i in range(260):
                cfg = js.StreamConfig(name=f"extra-{i}", subjects=[f"extra.{i}"], storage="memory")
                await jsadmin.create_stream(client, cfg)
            stream = client.config.nats.stream_name
            for i in range(260):
                consumer = js.ConsumerConfig(durable_name=f"c{i}", ack_policy="explicit")
                body = js.encode(js.ConsumerCreateRequest(stream_name=stream, config=consumer))
                await jsadmin.create_consumer(client, stream, f"c{i}", body)
            health = await client.health()
    # The event stream, the snapshot stream, and the extras.
    assert len(health.streams) == 262
    assert health.jetstream is not None
    assert health.jetstream.streams == 262
    assert len(health.consumers) == 260
    assert {c.name for c in health.consumers} == {f"c{i}" for i in range(260)}


async def test_per_domain_layout_each_domain_stream_is_an_event_stream(config: Config) -> None:
    """No single event stream to miss; each domain stream (angzarr's too) is
    judged by the store's settings until provisioning adopts it."""
    cfg = with_nats(config, stream_layout="per-domain")
    root = uuid.uuid4()
    async with (
        await AngzarrBus.connect(cfg.nats.servers, cfg.nats.subject_prefix) as bus,
        await angzarr_es.connect(config=cfg) as client,
    ):
        try:
            health = await client.health()
            assert (health.ok, health.event_stream, health.stream) == (True, "", None)
            await bus.publish(book("player", root, 0, [player_pb2.PlayerRegistered(name="a")]))
            stream = bus.stream_name("player")
            health = await client.health()
            assert [s.name for s in health.streams if s.is_event_stream] == [stream]
            assert health.stream is not None
            assert health.stream.config_differences["allow_direct"] == "False -> True"
            assert (
                f"stream {stream} does not serve Direct Get (allow_direct is off): reads go "
                "to its leader, one request per commit"
            ) in health.problems
            await client.provision()
            await client.store("hand").append(root, [player_pb2.PlayerRegistered()], expected=0)
            health = await client.health()
            assert health.ok, health.problems
            assert sorted(s.name for s in health.streams if s.is_event_stream) == [
                bus.stream_name("hand"),
                stream,
            ]
        finally:
            await jsadmin.delete_layout_streams(client, cfg)
