"""The three-server cluster the cluster modules share: one per module (starting
one and electing a meta leader costs seconds), and a fresh R3 stream per test
on a healthy cluster (whatever the previous test left dead or paused is
restarted first)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from angzarr_es.config import Config
from tests.support.cluster import Cluster, r3_stream


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster(3) as c:
        yield c


@pytest.fixture
async def r3(cluster: Cluster) -> AsyncIterator[Config]:
    """A fresh R3 stream on a healthy cluster; its config (deleted afterwards)."""
    async with r3_stream(cluster) as cfg:
        yield cfg
