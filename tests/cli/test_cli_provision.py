"""`angzarr-es provision` as a subprocess against a real server: the dry run, what
it creates, and what it refuses."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import msgspec
import pytest

import angzarr_es
from angzarr_es.config import Config
from angzarr_es.pb import player_pb2
from tests.support import jsadmin
from tests.support.angzarr_bus import AngzarrBus, book
from tests.support.cli import (
    add_nats_settings,
    one_error_line,
    run_cli,
    unreachable_fails,
    write_config,
)
from tests.support.jsadmin import messages as js


def test_provision_without_a_server() -> None:
    unreachable_fails("provision")


async def test_provision_dry_run_creates_nothing_then_provision_creates(
    conf: Path, client: angzarr_es.Client, config: Config
) -> None:
    name = config.nats.stream_name
    done = run_cli("provision", "--dry-run", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert f"stream {name} " in done.stdout
    assert "would be created" in done.stdout
    shown = json.loads(done.stdout[done.stdout.index("{") : done.stdout.rindex("}") + 1])
    assert shown == msgspec.to_builtins(client.stream_config())
    info = js.stream_info(await jsadmin.stream_info(client, name))
    assert info.error is not None
    assert info.error.err_code == 10059  # stream not found

    done = run_cli("provision", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert f"(nats-server {client.server_version}) created\n" in done.stdout
    done = run_cli("provision", "--dry-run", "--config", str(conf))
    assert "is up to date; nothing to do" in done.stdout
    assert "differences" not in done.stdout


async def test_provision_creates_the_configured_consumers_and_streams(
    config: Config, client: angzarr_es.Client, tmp_path: Path
) -> None:
    n = config.nats
    dlq = f"{n.stream_name}-dlq"
    conf = write_config(tmp_path / "angzarr.toml", config)
    conf.write_text(
        conf.read_text()
        + f'dlq_stream = "{dlq}"\n\n'
        + "[[bus.nats.consumers]]\n"
        + 'name = "player-projector"\n'
        + f'filter = "{n.subject_prefix}.events.player.*"\n'
    )
    done = run_cli("provision", "--dry-run", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert "consumer player-projector" in done.stdout
    assert "ack_wait 30.0s) would be created\n" in done.stdout
    done = run_cli("provision", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert "consumer player-projector" in done.stdout
    assert await jsadmin.consumer_names(client, n.stream_name) == ["player-projector"]
    done = run_cli("provision", "--dry-run", "--config", str(conf))
    assert "ack_wait 30.0s) exists and is up to date\n" in done.stdout
    # Changed behind our back: the dry run says what provisioning would change.
    theirs = {"durable_name": "player-projector", "ack_policy": "explicit", "max_deliver": 9}
    theirs["filter_subject"] = f"{n.subject_prefix}.events.player.*"
    body = msgspec.json.encode({"stream_name": n.stream_name, "config": theirs})
    await jsadmin.delete_consumer(client, n.stream_name, "player-projector")
    await jsadmin.create_consumer(client, n.stream_name, "player-projector", body)
    done = run_cli("provision", "--dry-run", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert "exists and would be updated (existing -> wanted):\n" in done.stdout
    assert "  max_deliver: 9 -> 5\n" in done.stdout
    # A definition it cannot take over: the dry run fails, naming the fix.
    theirs["filter_subject"] = f"{n.subject_prefix}.events.player.>"
    body = msgspec.json.encode({"stream_name": n.stream_name, "config": theirs})
    await jsadmin.delete_consumer(client, n.stream_name, "player-projector")
    await jsadmin.create_consumer(client, n.stream_name, "player-projector", body)
    done = run_cli("provision", "--dry-run", "--config", str(conf))
    assert done.returncode == 1
    assert "cannot be changed in place\nblocked: consumer player-projector" in done.stdout
    assert "filters.domain('player', deep=True)" in done.stdout
    await jsadmin.delete_consumer(client, n.stream_name, "player-projector")
    for stream in (dlq, n.snapshot_stream):
        info = js.stream_info(await jsadmin.stream_info(client, stream))
        assert info.error is None, stream
        await jsadmin.delete_stream(client, stream)
    again = run_cli("provision", "--config", str(conf))
    assert again.returncode == 0, again.stderr
    await jsadmin.delete_stream(client, dlq)
    await jsadmin.delete_stream(client, n.snapshot_stream)


async def test_provision_dry_run_shows_differences_then_fixes_them(
    conf: Path, client: angzarr_es.Client, config: Config
) -> None:
    # The seed's `nats stream add ... --max-age 7d`: would delete week-old events.
    seeded = msgspec.structs.replace(client.stream_config(), max_age=7 * 86400 * js.NANOS)
    await jsadmin.create_stream(client, seeded)
    done = run_cli("provision", "--dry-run", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert "would be updated" in done.stdout
    assert "  max_age: 604800000000000 -> 0" in done.stdout
    done = run_cli("provision", "--config", str(conf))
    assert done.returncode == 0
    assert "updated" in done.stdout
    assert "max_age: 604800000000000 -> 0" in done.stdout
    assert (await client.plan_provision()).action == "none"


async def test_provision_refuses_a_stream_it_cannot_fix(
    conf: Path, client: angzarr_es.Client
) -> None:
    memory = msgspec.structs.replace(client.stream_config(), storage="memory")
    await jsadmin.create_stream(client, memory)
    done = run_cli("provision", "--dry-run", "--config", str(conf))
    assert done.returncode == 1
    assert "cannot be changed in place" in done.stdout
    assert "  storage: 'memory' -> 'file'" in done.stdout
    done = run_cli("provision", "--config", str(conf))
    assert done.returncode == 1
    assert "exists with storage='memory'" in one_error_line(done.stderr)


async def test_provision_dry_run_looks_the_side_streams_up(config: Config, tmp_path: Path) -> None:
    n = config.nats
    dlq = f"{n.stream_name}-dlq"
    conf = write_config(tmp_path / "angzarr.toml", config)
    conf.write_text(conf.read_text() + f'dlq_stream = "{dlq}"\n')
    async with await angzarr_es.connect(config=config) as client:
        try:
            done = run_cli("provision", "--dry-run", "--config", str(conf))
            assert done.returncode == 0, done.stderr
            assert f"snapshot stream {n.snapshot_stream} would be created\n" in done.stdout
            assert f"dead-letter stream {dlq} would be created\n" in done.stdout

            done = run_cli("provision", "--config", str(conf))
            assert done.returncode == 0, done.stderr
            done = run_cli("provision", "--dry-run", "--config", str(conf))
            assert done.returncode == 0, done.stderr
            assert f"snapshot stream {n.snapshot_stream} exists and is up to date\n" in done.stdout
            assert f"dead-letter stream {dlq} exists and is up to date\n" in done.stdout
            assert "would be created" not in done.stdout

            # A snapshot stream whose settings drifted: the dry run names the change.
            plan = await client.plan_provision()  # what provisioning makes it
            wanted = next(s.config for s in plan.streams if s.role == "snapshot stream")
            drifted = msgspec.structs.replace(wanted, max_msgs_per_subject=7)
            await jsadmin.update_stream(client, drifted)
            done = run_cli("provision", "--dry-run", "--config", str(conf))
            assert done.returncode == 0, done.stderr
            assert f"snapshot stream {n.snapshot_stream} exists and would be updated" in (
                done.stdout
            )
            expected = f"  max_msgs_per_subject: 7 -> {wanted.max_msgs_per_subject}\n"
            assert expected in done.stdout
        finally:
            for stream in (n.stream_name, n.snapshot_stream, dlq):
                await jsadmin.delete_stream(client, stream)


@pytest.fixture
def r3_conf(conf: Path) -> Path:
    """`conf` asking for three replicas (the test server is a single one)."""
    return add_nats_settings(conf, "replicas = 3")


async def test_three_replicas_on_a_single_server_are_refused_naming_the_fix(
    r3_conf: Path, client: angzarr_es.Client, config: Config
) -> None:
    fix = "set bus.nats.replicas = 1, or connect to a cluster"
    done = run_cli("provision", "--dry-run", "--config", str(r3_conf))
    assert done.returncode == 1, done.stdout
    assert f"stream {config.nats.stream_name} " in done.stdout
    assert "cannot be created" in done.stdout
    assert "num_replicas: 1 -> 3" not in done.stdout
    (blocked,) = [line for line in done.stdout.splitlines() if line.startswith("blocked: ")]
    assert "bus.nats.replicas = 3 needs a JetStream cluster" in blocked
    assert fix in blocked

    done = run_cli("provision", "--config", str(r3_conf))
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert fix in line
    assert "10074" not in line  # predicted, not refused by the server
    assert await client.stream_settings(config.nats.stream_name) is None

    # An existing R1 stream: the same refusal, not an update to R3.
    done = run_cli("provision", "--config", str(conf_without_replicas(r3_conf)))
    assert done.returncode == 0, done.stderr
    done = run_cli("provision", "--dry-run", "--config", str(r3_conf))
    assert done.returncode == 1
    assert fix in done.stdout
    await jsadmin.delete_stream(client, config.nats.snapshot_stream)


def conf_without_replicas(conf: Path) -> Path:
    plain = conf.with_name("r1.toml")
    plain.write_text(conf.read_text().replace("replicas = 3\n", ""))
    return plain


@pytest.fixture
def max_age_conf(conf: Path) -> Path:
    return add_nats_settings(conf, 'max_age = "7d"')


async def test_the_max_age_warning_is_given_once(
    max_age_conf: Path, client: angzarr_es.Client
) -> None:
    done = run_cli("provision", "--dry-run", "--config", str(max_age_conf))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("JetStream will DELETE events") == 1, done.stderr
    assert "bus.nats.max_age = 604800s" in done.stderr
    assert '"max_age": 604800000000000' in done.stdout


async def test_provision_in_single_layout_beside_angzarr_names_the_fix(
    conf: Path, config: Config
) -> None:
    """angzarr's bus made its per-domain stream first: one line naming the
    stream and the setting, exit status 1, nothing created."""
    prefix = config.nats.subject_prefix
    async with await AngzarrBus.connect(config.nats.servers, prefix) as angzarr:
        await angzarr.publish(book("player", uuid.uuid4(), 0, [player_pb2.FundsDeposited()]))
        try:
            done = run_cli("provision", "--config", str(conf))
            assert done.returncode == 1, done.stderr
            line = one_error_line(done.stderr)
            assert angzarr.stream_name("player") in line
            assert 'stream_layout = "per-domain"' in line
            assert "10065" not in line
            async with await angzarr_es.connect(config=config) as client:
                info = js.stream_info(await jsadmin.stream_info(client, config.nats.stream_name))
                assert info.error is not None  # not created
        finally:
            await angzarr.delete_created()
