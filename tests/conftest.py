"""Shared fixtures: a real nats-server for the session, a fresh stream per test.

Set ANGZARR_TEST_NATS_URL to run against an existing JetStream server instead.
Each test gets its own stream name and subject prefix, so tests never see each
other's events and no state needs cleaning between them.

Set ANGZARR_TEST_LOOP=uvloop to run every test on uvloop's event loop (the
`test` extra installs it): the async tests through pytest-asyncio's loop
factory hook, and the tests that make loops of their own through the
process's event loop policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

import angzarr_es
from angzarr_es.config import Config
from angzarr_es.embedded import EmbeddedServer
from tests.support import jsadmin
from tests.support.configs import fresh_config

LOOPS = ("asyncio", "uvloop")
LOOP = os.environ.get("ANGZARR_TEST_LOOP", "asyncio")


def pytest_configure(config: pytest.Config) -> None:
    if LOOP not in LOOPS:
        raise pytest.UsageError(f"ANGZARR_TEST_LOOP={LOOP!r}: one of {', '.join(LOOPS)}")
    if LOOP == "uvloop":
        import uvloop

        # For the tests that make loops of their own (asyncio.new_event_loop).
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if LOOP == "uvloop":
    import uvloop

    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
        """Every async test and fixture on uvloop's loop."""
        return {"uvloop": uvloop.new_event_loop}


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
def interceptions() -> Iterator[contextlib.ExitStack]:
    """Interceptions (`angzarr_es.testing.faults.intercept`) a test enters
    with `interceptions.enter_context(...)`, left when the test ends."""
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture
async def client(config: Config) -> AsyncIterator[angzarr_es.Client]:
    """A connected client with its own provisioned stream (deleted afterwards)."""
    async with await angzarr_es.connect(config=config) as c:
        await c.provision()
        yield c
        await jsadmin.delete_stream(c, config.nats.stream_name)
        await jsadmin.delete_stream(c, config.nats.snapshot_stream)
