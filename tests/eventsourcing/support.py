"""Environments with a stream of their own for the eventsourcing module's tests."""

from __future__ import annotations

import itertools
import os
import unittest
from typing import Any
from unittest import mock

from eventsourcing.utils import Environment

from angzarr_es.eventsourcing import Factory

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
    factory = Factory({"NATS_URL": nats_url, "ANGZARR_ES_STREAM": stream})
    try:
        ds = factory.datastore
        ds.run(ds.wire.js.stream_delete(stream), f"delete {stream}")
    finally:
        factory.close()


def stream_state(factory: Factory) -> Any:
    """The server's account of the factory's stream (messages, last sequence, ...)."""
    ds = factory.datastore
    info = ds.run(ds.wire.js.stream_info(ds.stream), "stream info")
    assert info is not None
    return info.state


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
