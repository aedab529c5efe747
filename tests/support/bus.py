"""Helpers for the bus tests: a handler that records deliveries and lets a test
wait (with a timeout) for a condition on what it has seen."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from angzarr_es import Client, Delivery, filters
from tests.support import jsadmin

WAIT = 15.0


class Recorder:
    """An async handler that records every delivery and wakes waiters."""

    def __init__(self, behaviour: Callable[[Delivery], Awaitable[None]] | None = None) -> None:
        self.seen: list[Delivery] = []
        self._behaviour = behaviour
        self._changed = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        self.seen.append(delivery)
        self._changed.set()
        if self._behaviour is not None:
            await self._behaviour(delivery)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def wait_count(self, n: int, timeout: float = WAIT) -> None:
        await self.wait_for(lambda: len(self.seen) >= n, timeout)

    def notify(self) -> None:
        self._changed.set()


async def delete_dlq(client: Client) -> None:
    await jsadmin.delete_stream(client, client.config.nats.dlq_stream)


async def stored_headers(client: Client, domain: str, root: str) -> dict[str, str]:
    """The headers stored with the aggregate's first commit, names as stored."""
    async with client.subscribe(filters.aggregate(domain, root)) as sub:
        delivery = await asyncio.wait_for(anext(sub), WAIT)
    return delivery.headers
