"""Provisioning the event stream, connecting, and what a store says when the
stream, the server or the connection is missing."""

from __future__ import annotations

import asyncio
import logging

import pytest

import angzarr_es
from angzarr_es.config import Config
from angzarr_es.testing import faults
from angzarr_es.testing.faults import Forward, Reply, Request
from tests.support import jsadmin
from tests.support.configs import fresh_config
from tests.support.events import deposit
from tests.support.faultproxy import FaultProxy
from tests.support.jsadmin import messages as js


async def test_provision_is_idempotent_and_applies_event_store_settings(
    client: angzarr_es.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="angzarr_es"):
        await client.provision()
        await client.provision()
    assert not [r for r in caplog.records if "updating stream" in r.message]
    cfg = (await jsadmin.stream_info_json(client, client.config.nats.stream_name))["config"]
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
    config = fresh_config(nats_url, stream_check="warn")  # an event written before
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
        await jsadmin.create_stream(client, bad)
        await client.store("player").append("kept", [deposit(1)], expected=0)
        with caplog.at_level(logging.WARNING, logger="angzarr_es"):
            await client.provision()
        assert any("max_age" in r.message for r in caplog.records)
        cfg = (await jsadmin.stream_info_json(client, client.config.nats.stream_name))["config"]
        assert (cfg["max_age"], cfg["max_msgs_per_subject"], cfg["discard"]) == (0, -1, "new")
        assert await client.store("player").next_sequence("kept") == 1
        await jsadmin.delete_stream(client, nats.stream_name)


async def test_provision_refuses_a_memory_stream(nats_url: str) -> None:
    config = fresh_config(nats_url)
    nats = config.nats
    async with await angzarr_es.connect(config=config) as client:
        bad = js.StreamConfig(
            name=nats.stream_name,
            subjects=[f"{nats.subject_prefix}.events.>"],
            storage="memory",
        )
        await jsadmin.create_stream(client, bad)
        with pytest.raises(angzarr_es.StreamConfigError, match="storage"):
            await client.provision()
        await jsadmin.delete_stream(client, nats.stream_name)


async def test_a_configured_max_age_warns_that_events_will_be_deleted(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = fresh_config(nats_url, max_age=3600.0)
    with caplog.at_level(logging.WARNING, logger="angzarr_es"):
        config.validate()
    assert any("DELETE" in r.message for r in caplog.records)


async def test_provision_refuses_a_server_that_is_too_old(client: angzarr_es.Client) -> None:
    """A server announcing 2.10.22 in its INFO (rewritten on the way)."""
    port = int(client.connected_url.rpartition(":")[2])
    proxy = await FaultProxy(port).start()
    real = f'"version":"{client.server_version}"'.encode()
    proxy.rewrite = lambda data: data.replace(real, b'"version":"2.10.22"')
    try:
        async with await angzarr_es.connect(config=client.config.with_url(proxy.url)) as old:
            assert old.server_version == "2.10.22"
            with pytest.raises(angzarr_es.ServerTooOld, match=r"2\.11"):
                await old.provision()
    finally:
        await proxy.close()


async def test_appending_without_a_stream_says_so(config: Config) -> None:
    async with await angzarr_es.connect(config=config) as client:
        store = client.store("player")
        # Publishes, reads and lookups name the missing stream (a 503 alone
        # read as transient), with the err_code to act on.
        missing = f"stream {config.nats.stream_name} does not exist.*provision"
        with pytest.raises(angzarr_es.StoreUnavailable, match=missing) as info:
            await store.append("x", [deposit(1)], expected=0)
        assert info.value.err_code == 10059
        with pytest.raises(angzarr_es.StoreUnavailable, match=missing):
            await store.load("x")
        with pytest.raises(angzarr_es.StoreUnavailable, match=missing):
            await store.append("x", [deposit(1)], expected=1)
        with pytest.raises(angzarr_es.StoreUnavailable, match=missing):
            await store.next_sequence("x")
        with pytest.raises(angzarr_es.StoreUnavailable, match=missing):
            await client.events_by_correlation("wf")  # was {}: "no events"
    # Failures together share one probe (an election must not cost one per
    # read): a new client, which has not looked at the stream yet.
    asked: list[str] = []

    async def counting(request: Request, forward: Forward) -> Reply:
        asked.append(faults.operation(request))
        return await forward(request)

    async with await angzarr_es.connect(config=config) as client:
        store = client.store("player")
        with faults.intercept(client, on_request=counting):
            got = await asyncio.gather(
                *(store.load(f"y{i}") for i in range(20)),
                *(store.append(f"z{i}", [deposit(1)], expected=0) for i in range(20)),
                return_exceptions=True,
            )
        assert all(isinstance(e, angzarr_es.StoreUnavailable) for e in got), got
        assert all("does not exist" in str(e) for e in got), got
        assert asked.count("STREAM.INFO") == 1


async def test_connect_with_a_url_ignores_a_bad_nats_url(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NATS_URL", "http://not-nats:4222")
    async with await angzarr_es.connect(nats_url) as client:  # `url` replaces NATS_URL
        assert client.connected
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
    assert not client.closed
    assert client.connected_url.startswith("nats://")
    await client.close()
    assert client.closed
    with pytest.raises(angzarr_es.StoreUnavailable):
        await store.append("x", [deposit(1)], expected=0)
    with pytest.raises(angzarr_es.StoreUnavailable):
        await store.load("x")
