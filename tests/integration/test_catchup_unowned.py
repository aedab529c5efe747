"""The catch-up module's own test: a `CatchUp` no client owns (as
`bus.subscribe` and a spanning catch-up's lanes make them) whose connection
is closed under it ends with StoreUnavailable instead of re-making its
consumer for ever (it did, found by a review)."""

from __future__ import annotations

import asyncio

import pytest

import angzarr_es
from angzarr_es._nats import Wire
from angzarr_es.bus import CatchUp
from angzarr_es.config import Config
from tests.support.events import deposit


async def test_an_unowned_catch_up_ends_when_its_connection_is_closed(
    client: angzarr_es.Client, config: Config
) -> None:
    wire = await Wire.connect(config.nats)
    subject = client.bus.filter(angzarr_es.filters.domain("player"))
    first = asyncio.Event()

    async def read() -> None:
        async with CatchUp(wire, config.nats, subject, "all") as sub:
            async for _ in sub:
                first.set()

    reader = asyncio.create_task(read())
    await client.store("player").append("p", [deposit(0)], expected=0)
    await asyncio.wait_for(first.wait(), 10)
    await wire.close()
    with pytest.raises(angzarr_es.StoreUnavailable, match="client was closed"):
        await asyncio.wait_for(reader, 20)
