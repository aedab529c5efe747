"""Shared fixtures: a real nats-server for the session, a fresh stream per test.

Set ANGZARR_TEST_NATS_URL to run against an existing JetStream server instead.
Each test gets its own stream name and subject prefix, so tests never see each
other's events and no state needs cleaning between them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest

import angzarr_es
from angzarr_es.config import Config
from angzarr_es.embedded import EmbeddedServer
from tests.support import jsadmin
from tests.support.configs import fresh_config


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """URL of a JetStream-enabled nats-server for the whole session."""
    external = os.environ.get("ANGZARR_TEST_NATS_URL")
    if external:
        yield external
        return
    with EmbeddedServer() as server:
        yield server.url


@pytest.fixture
def config(nats_url: str) -> Config:
    return fresh_config(nats_url)


@pytest.fixture
async def client(config: Config) -> AsyncIterator[angzarr_es.Client]:
    """A connected client with its own provisioned stream (deleted afterwards)."""
    async with await angzarr_es.connect(config=config) as c:
        await c.provision()
        yield c
        await jsadmin.delete_stream(c, config.nats.stream_name)
        await jsadmin.delete_stream(c, config.nats.snapshot_stream)
