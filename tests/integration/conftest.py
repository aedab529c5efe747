"""The contract's backends: every implementation of the client, side by side."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import angzarr_es
from angzarr_es._contract import ClientProtocol
from angzarr_es.config import Config, ConsumerSpec
from angzarr_es.testing import InMemoryClient
from tests.support import jsadmin
from tests.support.configs import with_nats


@pytest.fixture(params=["memory", "direct", "consumer", "cached"])
async def backend(request: pytest.FixtureRequest, config: Config) -> AsyncIterator[ClientProtocol]:
    """One implementation: the in-memory client, a real client with one replay
    strategy and no cache, or one with the hot-aggregate cache (the default
    settings); all with a `[[bus.nats.consumers]]` entry "configured" for
    every player subject."""
    spec = ConsumerSpec(
        name="configured", filter=f"{config.nats.subject_prefix}.events.player.>", max_deliver=3
    )
    cfg = with_nats(config, consumers=[spec])
    if request.param == "memory":
        memory = InMemoryClient(config=cfg)
        await memory.provision()
        yield memory
        return
    if request.param != "cached":
        cfg = with_nats(cfg, replay=request.param, cache_bytes=0)
    async with await angzarr_es.connect(config=cfg) as client:
        await client.provision()
        yield client
        if not client.closed:
            await _delete_streams(client, cfg)
            return
    async with await angzarr_es.connect(config=cfg) as admin:  # the test closed it
        await _delete_streams(admin, cfg)


async def _delete_streams(client: angzarr_es.Client, cfg: Config) -> None:
    nats = cfg.nats
    for stream in (nats.stream_name, nats.snapshot_stream, nats.dlq_stream):
        await jsadmin.delete_stream(client, stream)
