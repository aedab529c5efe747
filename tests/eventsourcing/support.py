"""Environments with a stream of their own for the eventsourcing module's tests."""

from __future__ import annotations

import asyncio
import itertools
import os
import unittest
from types import SimpleNamespace
from typing import Any
from unittest import mock

from eventsourcing.utils import Environment

from angzarr_es.eventsourcing import Factory
from tests.support import jsadmin

MODULE = "angzarr_es.eventsourcing"

_ids = itertools.count(1)


def stream_name() -> str:
    """A stream name no other test uses."""
    return f"es-{os.getpid()}-{next(_ids)}"


def environment(nats_url: str, **extra: str) -> dict[str, str]:
    """Settings selecting the module, on a stream of their own."""
    return {
        "PERSISTENCE_MODULE": MODULE,
        "NATS_URL": nats_url,
        "ANGZARR_ES_STREAM": stream_name(),
        **extra,
    }


def drop_stream(nats_url: str, stream: str) -> None:
    """Delete `stream` (if it exists) through a connection of its own."""
    asyncio.run(jsadmin.delete_stream(jsadmin.at(nats_url), stream))


def _server_and_stream(factory: Factory) -> tuple[str, str]:
    """The server and the stream the factory's settings name."""
    url, stream = factory.env.get("NATS_URL"), factory.env.get("ANGZARR_ES_STREAM")
    assert url is not None, "NATS_URL"
    assert stream is not None, "ANGZARR_ES_STREAM"
    return url, stream


def stream_state(factory: Factory) -> Any:
    """The server's account of the factory's stream (messages, last sequence, ...),
    asked on a connection of its own to the server its settings name."""
    url, stream = _server_and_stream(factory)
    info = asyncio.run(jsadmin.stream_info_json(jsadmin.at(url), stream))
    return SimpleNamespace(**info["state"])


class WithNats(unittest.TestCase):
    """A test case with `self.settings` naming a stream of its own (deleted
    after the test) on the session's server (`nats_url`, set by conftest)."""

    nats_url: str
    id_type = "uuid"

    def setUp(self) -> None:
        self.settings = environment(self.nats_url, ORIGINATOR_ID_TYPE=self.id_type)
        self.addCleanup(drop_stream, self.nats_url, self.settings["ANGZARR_ES_STREAM"])
        self.prepare()
        super().setUp()

    def prepare(self) -> None:
        """Runs after the settings are made, before the base class's setUp."""

    def make_factory(self, name: str = "app", **extra: str) -> Factory:
        """A factory on this test's stream, closed after the test."""
        factory = Factory(Environment(name, {**self.settings, **extra}))
        self.addCleanup(factory.close)
        return factory

    def use_os_environ(self) -> None:
        """Put the settings in os.environ for the test (applications read it)."""
        patcher = mock.patch.dict(os.environ, self.settings)
        patcher.start()
        self.addCleanup(patcher.stop)


def consumer_count(factory: Factory) -> int:
    """How many consumers the factory's stream has, asked on a connection of its own."""
    url, stream = _server_and_stream(factory)
    return len(asyncio.run(jsadmin.consumer_names(jsadmin.at(url), stream)))
