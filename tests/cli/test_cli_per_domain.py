"""Every subcommand with a config file that says `stream_layout = "per-domain"`
(angzarr's layout: one stream `<PREFIX>_<DOMAIN>` per domain), beside
angzarr's own bus (`tests/support/angzarr_bus.py`); and the single layout's
refusal to provision over angzarr's streams, in one line."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import angzarr_es
from angzarr_es.config import Config
from angzarr_es.pb import hand_pb2, player_pb2
from tests.support import jsadmin
from tests.support.angzarr_bus import AngzarrBus, book
from tests.support.cli import (
    add_nats_settings,
    one_error_line,
    run_cli,
    start_cli,
    stderr_lines,
    stop,
    write_config,
)
from tests.support.configs import with_nats

LAYOUT = 'stream_layout = "per-domain"\n'


@pytest.fixture
def per_domain(config: Config) -> Config:
    return with_nats(config, stream_layout="per-domain")


@pytest.fixture
def pd_conf(per_domain: Config, tmp_path: Path) -> Path:
    """A config file in the per-domain layout for this test's server and prefix."""
    return add_nats_settings(write_config(tmp_path / "angzarr-es.toml", per_domain), LAYOUT)


@pytest.fixture
async def angzarr(per_domain: Config) -> AsyncIterator[AngzarrBus]:
    """angzarr's bus on the test's prefix; every stream of the prefix is deleted after."""
    nats = per_domain.nats
    async with await AngzarrBus.connect(nats.servers, nats.subject_prefix) as bus:
        yield bus
    async with await angzarr_es.connect(config=per_domain) as admin:
        await jsadmin.delete_layout_streams(admin, per_domain)


def deposit(cents: int) -> player_pb2.FundsDeposited:
    return player_pb2.FundsDeposited(amount_cents=cents, currency="EUR")


async def stream_config(cfg: Config, name: str) -> dict[str, object]:
    async with await angzarr_es.connect(config=cfg) as client:
        config: dict[str, object] = (await jsadmin.stream_info_json(client, name))["config"]
        return config


def cli(*args: str) -> tuple[int, str, str]:
    done = run_cli(*args)
    return done.returncode, done.stdout, done.stderr


async def test_provision_adopts_angzarrs_stream_and_lists_what_it_changed(
    pd_conf: Path, per_domain: Config, angzarr: AngzarrBus
) -> None:
    root = uuid.uuid4()
    await angzarr.publish(book("player", root, 0, [deposit(1)]))  # angzarr made <P>_PLAYER
    stream = angzarr.stream_name("player")
    code, out, err = await asyncio.to_thread(
        cli, "provision", "--dry-run", "--config", str(pd_conf)
    )
    assert code == 0, err
    assert out.startswith(f"correlation stream {per_domain.nats.correlation_stream} on ")
    assert f"domain stream {stream} exists and would be updated" in out
    assert "  allow_direct: False -> True" in out
    assert "  discard:" not in out  # no limit: angzarr's "old" discards nothing, left as it is
    assert (await stream_config(per_domain, stream))["allow_direct"] is False
    args = ("provision", "--domain", "hand", "--config", str(pd_conf))
    code, out, err = await asyncio.to_thread(cli, *args)
    assert code == 0, err
    lines = out.splitlines()
    adopted = lines.index(
        f"domain stream {stream} (domain player) adopted, updated in place (existing -> wanted):"
    )
    assert "  allow_direct: False -> True" in lines[adopted + 1 :]
    assert f"domain stream {angzarr.stream_name('hand')} (domain hand) created" in lines
    assert (await stream_config(per_domain, stream))["allow_direct"] is True
    code, out, err = await asyncio.to_thread(cli, "provision", "--config", str(pd_conf))
    assert code == 0, err
    assert f"domain stream {stream} (domain player) is up to date" in out.splitlines()
    # angzarr's get-or-create finds the stream made by angzarr_es and goes on.
    await angzarr.publish(book("hand", uuid.uuid4(), 0, [hand_pb2.PlayerFolded(player_id="x")]))


async def test_every_subcommand_in_the_per_domain_layout(
    pd_conf: Path, per_domain: Config, angzarr: AngzarrBus
) -> None:
    root = uuid.uuid4()
    await angzarr.publish(book("player", root, 0, [deposit(7)], correlation_id="wf"))
    conf = ("--config", str(pd_conf))
    code, out, err = await asyncio.to_thread(cli, "provision", *conf)
    assert code == 0, err

    # show: angzarr's book, read from its domain's stream
    code, out, err = await asyncio.to_thread(cli, "show", "player", str(root), "--json", *conf)
    assert code == 0, err
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert (row["id"], row["sequence"], row["event"]["amount_cents"]) == (str(root), 0, "7")

    # tail over every domain: its lanes span the domain streams
    tail = start_cli("tail", ">", "--count", "2", "--json", *conf)
    try:
        stderr_lines(tail).until(lambda line: line.startswith("tailing "))
        async with await angzarr_es.connect(config=per_domain) as client:
            await client.store("player").append(root, [deposit(8)], expected=1)
        await angzarr.publish(book("player", root, 2, [deposit(9)]))
        tailed = [json.loads(line) for line in await asyncio.to_thread(tail.rest)]
    finally:
        stop(tail)
    assert [(r["sequence"], r["event"]["amount_cents"]) for r in tailed] == [(1, "8"), (2, "9")]

    # index-correlation: angzarr's commits become findable (its filter spans the streams)
    args = ("index-correlation", "--count", "3", "--name", "ix", *conf)
    code, out, err = await asyncio.to_thread(cli, *args)
    assert code == 0, err
    async with await angzarr_es.connect(config=per_domain) as client:
        assert list(await client.events_by_correlation("wf")) == [("player", str(root))]

    # status: the domain stream is the event stream, healthy; --json alike
    code, out, err = await asyncio.to_thread(cli, "status", *conf)
    assert code == 0, out + err
    assert any(line.startswith(f"{angzarr.stream_name('player')} *") for line in out.splitlines())
    assert out.rstrip().endswith("healthy")
    code, out, err = await asyncio.to_thread(cli, "status", "--json", *conf)
    health = json.loads(out)
    assert code == 0, health["problems"]
    assert health["ok"]
    events = [s["name"] for s in health["streams"] if s["is_event_stream"]]
    assert events == [angzarr.stream_name("player")]
    assert health["event_stream"] == ""  # no single event stream in this layout

    # demo: a new player in the per-domain layout (a UUID root)
    code, out, err = await asyncio.to_thread(cli, "demo", *conf)
    assert code == 0, err
    assert "exactly one withdrawal was stored" in out

    # errors the user can cause: one line, exit 2 (usage) or 1 (runtime)
    code, out, err = await asyncio.to_thread(cli, "show", "player", "not-a-uuid", *conf)
    assert code == 2
    assert "is not a UUID" in one_error_line(err)
    code, out, err = await asyncio.to_thread(cli, "provision", "--domain", "a b", *conf)
    assert code == 2
    assert "domain" in one_error_line(err)
    code, out, err = await asyncio.to_thread(cli, "show", "player", str(uuid.uuid4()), *conf)
    assert code == 1
    assert "has no events" in one_error_line(err)


async def test_single_layout_provision_beside_angzarr_names_the_setting(
    conf: Path, angzarr: AngzarrBus
) -> None:
    await angzarr.publish(book("player", uuid.uuid4(), 0, [deposit(1)]))
    for args in (("provision",), ("provision", "--dry-run")):
        code, out, err = await asyncio.to_thread(cli, *args, "--config", str(conf))
        assert code == 1, (args, out, err)
        said = err if not out else out.splitlines()[-1]
        if not out:
            said = one_error_line(err)
        assert angzarr.stream_name("player") in said, (args, out, err)
        assert 'set bus.nats.stream_layout = "per-domain"' in said, (args, out, err)
        assert "10065" not in out + err
