"""angzarr_es beside angzarr's own NATS bus (reproduced from its source in
`tests/support/angzarr_bus.py`) on one server, in both start orders."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import angzarr_es
from angzarr_es import ANY
from angzarr_es.config import Config
from angzarr_es.errors import InvalidAggregateId, StreamConfigError
from angzarr_es.pb import player_pb2
from angzarr_es.testing import InMemoryClient
from tests.support import jsadmin
from tests.support.angzarr_bus import AngzarrBus, AngzarrBusError, book
from tests.support.cli import (
    add_nats_settings,
    run_cli,
    start_cli,
    stderr_lines,
    stop,
    write_config,
)
from tests.support.cluster import eventually
from tests.support.configs import with_nats
from tests.support.interop import DOMAIN, both_ways

SUBJECTS_OVERLAP = 10065
LAYOUT = 'stream_layout = "per-domain"\n'


@pytest.fixture
async def angzarr(config: Config) -> AsyncIterator[AngzarrBus]:
    """angzarr's bus on the test's prefix; the streams it made are deleted after."""
    async with await AngzarrBus.connect(config.nats.servers, config.nats.subject_prefix) as bus:
        yield bus
        await bus.delete_created()


def deposit(cents: int) -> player_pb2.FundsDeposited:
    return player_pb2.FundsDeposited(amount_cents=cents, currency="EUR")


# -- the single layout: the collision this project had ---------------------------


async def test_single_layout_first_then_angzarr_publish_fails_with_10065(
    client: angzarr_es.Client, angzarr: AngzarrBus
) -> None:
    # angzarr_es provisioned its one stream over `<p>.events.>`; angzarr's
    # get-or-create of `<P>_PLAYER` over `<p>.events.player.>` is refused.
    with pytest.raises(AngzarrBusError) as caught:
        await angzarr.publish(book("player", uuid.uuid4(), 0, [deposit(1)]))
    assert caught.value.err_code == SUBJECTS_OVERLAP
    assert angzarr.created == []


async def test_single_layout_after_angzarr_cannot_provision(
    config: Config, angzarr: AngzarrBus
) -> None:
    await angzarr.publish(book("player", uuid.uuid4(), 0, [deposit(1)]))
    assert angzarr.created == [angzarr.stream_name("player")]
    async with await angzarr_es.connect(config=config) as client:
        # Not the raw 10065: which streams, and the setting that fixes it.
        with pytest.raises(StreamConfigError) as caught:
            await client.provision()
    assert angzarr.stream_name("player") in str(caught.value)
    assert 'stream_layout = "per-domain"' in str(caught.value)


# -- the per-domain layout: angzarr's own, in both start orders --------------------


@pytest.mark.parametrize("order", ["angzarr", "angzarr_es"])
async def test_per_domain_layout_lives_beside_angzarr_in_both_start_orders(
    config: Config, order: str
) -> None:
    cfg = with_nats(config, stream_layout="per-domain")

    async def provision(client: angzarr_es.Client) -> object:
        return await client.provision(domains=[DOMAIN])

    try:
        await both_ways(cfg, order, provision)
    finally:
        async with await angzarr_es.connect(config=cfg) as admin:
            await jsadmin.delete_layout_streams(admin, cfg)


# 16 bytes of text would pass for a root on angzarr's side (`Uuid::from_slice`)
# and name another aggregate there than the subject does here.
NOT_UUIDS = ["player-7", "abcdefghijklmnop", "\u00e9" * 8, uuid.UUID(int=7).hex]


@pytest.mark.parametrize("bad", NOT_UUIDS)
async def test_per_domain_layout_refuses_ids_angzarr_cannot_read(config: Config, bad: str) -> None:
    cfg = with_nats(config, stream_layout="per-domain")
    memory = InMemoryClient(config=cfg)
    async with await angzarr_es.connect(config=cfg) as client:
        await client.provision(domains=[DOMAIN])
        try:
            for backend in (client, memory):
                store = backend.store(DOMAIN)
                with pytest.raises(InvalidAggregateId, match=r"is not a UUID: .*Uuid::from_slice"):
                    await store.append(bad, [deposit(1)], expected=0)
                with pytest.raises(InvalidAggregateId, match="is not a UUID"):
                    await store.load(bad)
                for good in (uuid.UUID(int=7), str(uuid.UUID(int=7)).upper()):
                    await store.append(good, [deposit(2)], expected=ANY)
            info = await jsadmin.stream_info_json(client, client.store(DOMAIN).stream)
            assert info["state"]["messages"] == 2  # the refused appends sent nothing
        finally:
            await jsadmin.delete_layout_streams(client, cfg)


# -- docs/angzarr.md's walkthrough ---------------------------------------------------

PAGE = (Path(__file__).resolve().parents[2] / "docs" / "angzarr.md").read_text()
WALKTHROUGH = re.findall(r"```python\n(.*?)```", PAGE, flags=re.S)
COMMANDS = [
    line.split("#")[0].rstrip(" &").split()[2:]
    for block in re.findall(r"```console\n(.*?)```", PAGE, flags=re.S)
    for line in block.splitlines()
    if line.startswith("$ angzarr-es ")
]


async def test_the_docs_walkthrough_runs(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page's projector and `deposit`, against angzarr's bus: angzarr
    writes first, the projector counts its deposits and ours."""
    assert len(WALKTHROUGH) == 1
    cfg = with_nats(config, stream_layout="per-domain")
    conf = add_nats_settings(write_config(tmp_path / "angzarr-es.toml", cfg), LAYOUT)
    script = tmp_path / "walkthrough.py"
    script.write_text(WALKTHROUGH[0])
    spec = importlib.util.spec_from_file_location("walkthrough", script)
    assert spec is not None
    assert spec.loader is not None
    walkthrough = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(walkthrough)
    monkeypatch.chdir(conf.parent)
    player = uuid.uuid4()
    stop = asyncio.Event()
    running: asyncio.Task[None] | None = None
    try:
        async with await AngzarrBus.connect(cfg.nats.servers, cfg.nats.subject_prefix) as bus:
            await bus.publish(book(DOMAIN, player, 0, [deposit(100), deposit(20)]))
            running = asyncio.create_task(walkthrough.main(stop))
            async with await angzarr_es.connect(config=cfg) as client:
                await walkthrough.deposit(client, str(player), 3)

                async def counted() -> bool | None:
                    return walkthrough.balances.get(str(player)) == 123 or None

                await eventually(counted, timeout=15, what="the projector to count 123")
            stop.set()
            await running
            await bus.delete_created()
    finally:
        stop.set()
        if running is not None and not running.done():
            running.cancel()
        async with await angzarr_es.connect(config=cfg) as admin:
            await jsadmin.delete_layout_streams(admin, cfg)


async def test_the_docs_walkthrough_commands_run(config: Config, tmp_path: Path) -> None:
    """The page's commands, after angzarr made its stream: `provision` adopts
    it, `index-correlation` (here for one commit, not in the background)
    makes angzarr's commit findable, `tail player` shows angzarr's next one."""
    provision, index, tail = COMMANDS
    assert provision[-1] == "provision"
    assert index[-1] == "index-correlation"
    assert tail[-2:] == ["tail", "player"]
    cfg = with_nats(config, stream_layout="per-domain")
    add_nats_settings(write_config(tmp_path / "angzarr-es.toml", cfg), LAYOUT)
    first, second = uuid.uuid4(), uuid.uuid4()
    try:
        async with await AngzarrBus.connect(cfg.nats.servers, cfg.nats.subject_prefix) as bus:
            await bus.publish(book(DOMAIN, first, 0, [deposit(1)], correlation_id="wf"))
            done = await asyncio.to_thread(run_cli, *provision, cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            assert f"updating stream {bus.stream_name(DOMAIN)} " in done.stderr
            done = await asyncio.to_thread(run_cli, *index, "--count", "1", cwd=tmp_path)
            assert done.returncode == 0, done.stderr
            tailing = start_cli(*tail, "--count", "1", cwd=tmp_path)
            try:
                await asyncio.to_thread(
                    stderr_lines(tailing).until, lambda line: line.startswith("tailing ")
                )
                await bus.publish(book(DOMAIN, second, 0, [deposit(2)]))
                (line,) = await asyncio.to_thread(tailing.rest)
            finally:
                stop(tailing)
            assert f"player/{second}" in line
        async with await angzarr_es.connect(config=cfg) as client:
            found = await client.events_by_correlation("wf")
            assert [root for _, root in found] == [str(first)]
            info = await jsadmin.stream_info_json(client, bus.stream_name(DOMAIN))
            assert info["config"]["allow_direct"] is True  # adopted
    finally:
        async with await angzarr_es.connect(config=cfg) as admin:
            await jsadmin.delete_layout_streams(admin, cfg)
