"""`angzarr-es index-correlation`: commits angzarr's bus stamped with a
correlation id become findable by `events_by_correlation`."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import angzarr_es
from angzarr_es.pb import player_pb2
from tests.support.angzarr_bus import AngzarrBus, book
from tests.support.cli import run_cli


async def test_index_correlation_indexes_angzarr_commits(
    conf: Path, client: angzarr_es.Client
) -> None:
    await client.provision()
    nats = client.config.nats
    roots = [uuid.uuid4(), uuid.uuid4()]
    async with await AngzarrBus.connect(nats.servers, nats.subject_prefix) as angzarr:
        for root in roots:
            made = book("player", root, 0, [player_pb2.PlayerRegistered()], correlation_id="wf")
            await angzarr.publish(made, ensure=False)
    assert await client.events_by_correlation("wf") == {}
    args = ("index-correlation", "--count", "2", "--name", "ix", "--config", str(conf))
    done = await asyncio.to_thread(run_cli, *args)
    assert done.returncode == 0, done.stderr
    assert "indexing correlation ids as ix" in done.stderr
    found = await client.events_by_correlation("wf")
    assert sorted(root for _, root in found) == sorted(map(str, roots))


def test_index_correlation_usage_errors(conf: Path) -> None:
    done = run_cli("index-correlation", "--count", "-1", "--config", str(conf))
    assert done.returncode == 2
    assert done.stderr.strip() == "angzarr-es: error: --count must be >= 0"
