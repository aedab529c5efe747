"""Fixtures of the fault tests: one three-server cluster per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cluster import Cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A three-server JetStream cluster on loopback, shared by one module's tests."""
    with Cluster(3) as c:
        yield c
