"""Helpers for the bus tests: a handler that records deliveries and lets a test
wait (with a timeout) for a condition on what it has seen."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import msgspec

from angzarr_es import Client, Delivery
from angzarr_es.config import Config
from angzarr_es.pb import player_pb2

WAIT = 15.0


def deposit(cents: int) -> player_pb2.FundsDeposited:
    return player_pb2.FundsDeposited(amount_cents=cents, currency="EUR")


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


def with_nats(config: Config, **overrides: object) -> Config:
    nats = msgspec.structs.replace(config.nats, **overrides)
    return Config(bus=msgspec.structs.replace(config.bus, nats=nats))


async def consumer_names(client: Client, stream: str) -> list[str]:
    raw = await client._wire.api(f"$JS.API.CONSUMER.NAMES.{stream}")
    names: list[str] = msgspec.json.decode(raw).get("consumers") or []
    return names


async def delete_dlq(client: Client) -> None:
    await client._wire.api(f"$JS.API.STREAM.DELETE.{client.config.nats.dlq_stream}")
