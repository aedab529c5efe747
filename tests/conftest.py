"""Shared fixtures: a real nats-server for the session, a fresh stream per test.

Set ANGZARR_TEST_NATS_URL to run against an existing JetStream server instead.
Each test gets its own stream name and subject prefix, so tests never see each
other's events and no state needs cleaning between them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator

import msgspec
import pytest

import angzarr_es
from angzarr_es.config import Config, NatsConfig
from angzarr_es.embedded import EmbeddedServer

_ids = itertools.count(1)


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """URL of a JetStream-enabled nats-server for the whole session."""
    external = os.environ.get("ANGZARR_TEST_NATS_URL")
    if external:
        yield external
        return
    with EmbeddedServer() as server:
        yield server.url


def fresh_config(url: str, **overrides: object) -> Config:
    """A configuration with a stream and subject prefix no other test uses."""
    n = next(_ids)
    tag = f"{os.getpid()}x{n}"
    nats = NatsConfig(url=url, stream_name=f"test-{tag}", subject_prefix=f"t{tag}")
    if overrides:
        nats = msgspec.structs.replace(nats, **overrides)
    return Config(bus=msgspec.structs.replace(Config().bus, nats=nats))


@pytest.fixture
def config(nats_url: str) -> Config:
    return fresh_config(nats_url)


@pytest.fixture
async def client(config: Config) -> AsyncIterator[angzarr_es.Client]:
    """A connected client with its own provisioned stream (deleted afterwards)."""
    async with await angzarr_es.connect(config=config) as c:
        await c.provision()
        yield c
        await delete_stream(c, config.nats.stream_name)
        await delete_stream(c, config.nats.snapshot_stream)


async def delete_stream(client: angzarr_es.Client, name: str) -> None:
    """Remove a test stream (deny_delete forbids deleting messages, not the stream)."""
    wire = client._wire  # the tests may use the seam directly
    if not wire.nc.is_closed:
        await wire.js.call(f"$JS.API.STREAM.DELETE.{name}")
