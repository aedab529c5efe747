"""The contract's backends: every implementation of the client, side by side."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import angzarr_es
from angzarr_es._contract import ClientProtocol
from angzarr_es.config import Config, ConsumerSpec
from angzarr_es.testing import InMemoryClient
from tests.support import jsadmin
from tests.support.configs import with_nats
from tests.support.uuidroots import UuidClient

BACKENDS = ["memory", "direct", "consumer", "cached"]
# The same in the per-domain layout (angzarr's), whose ids must be UUIDs: the
# tests' string ids are mapped to UUIDs and back (tests/support/uuidroots.py).
PER_DOMAIN = ["memory/per-domain", "direct/per-domain", "consumer/per-domain", "cached/per-domain"]


@pytest.fixture(params=BACKENDS + PER_DOMAIN)
async def backend(request: pytest.FixtureRequest, config: Config) -> AsyncIterator[ClientProtocol]:
    """One implementation: the in-memory client, a real client with one replay
    strategy and no cache, or one with the hot-aggregate cache (the default
    settings), in the single or the per-domain stream layout; all with a
    `[[bus.nats.consumers]]` entry "configured" for every player subject."""
    kind, _, layout = str(request.param).partition("/")
    spec = ConsumerSpec(
        name="configured", filter=f"{config.nats.subject_prefix}.events.player.>", max_deliver=3
    )
    cfg = with_nats(config, consumers=[spec], stream_layout=layout or "single")
    if kind == "memory":
        memory = InMemoryClient(config=cfg)
        await memory.provision()
        yield _seen(memory, layout)
        return
    if kind != "cached":
        cfg = with_nats(cfg, replay=kind, cache_bytes=0)
    async with await angzarr_es.connect(config=cfg) as client:
        await client.provision()
        yield _seen(client, layout)
        if not client.closed:
            await jsadmin.delete_layout_streams(client, cfg)
            return
    async with await angzarr_es.connect(config=cfg) as admin:  # the test closed it
        await jsadmin.delete_layout_streams(admin, cfg)


def _seen(client: Any, layout: str) -> Any:
    return UuidClient(client) if layout else client
