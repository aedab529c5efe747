"""The eventsourcing library's test cases are `unittest.TestCase`s: they get
the session's nats-server URL as `self.nats_url`."""

from __future__ import annotations

import unittest

import pytest


@pytest.fixture(autouse=True)
def _nats_url_for_test_cases(request: pytest.FixtureRequest, nats_url: str) -> None:
    if isinstance(request.instance, unittest.TestCase):
        request.instance.nats_url = nats_url  # type: ignore[attr-defined]
