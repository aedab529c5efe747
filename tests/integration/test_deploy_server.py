"""deploy/ against a real server: provision applies what the files say, and the
server accepts the stream, the consumer and the compose command."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import msgspec
import pytest

import angzarr_es
from angzarr_es import filters
from angzarr_es.config import BusConfig, Config, ConsumerSpec, NatsConfig
from angzarr_es.embedded import find_nats_server
from angzarr_es.subjects import events_filter
from tests.support import jsadmin
from tests.support.bus import Recorder
from tests.support.configs import with_nats
from tests.support.deploy import compose_services, deploy_json
from tests.support.events import deposit

DEFAULTS = NatsConfig()


def _r3(url: str) -> Config:
    return Config(bus=BusConfig(nats=msgspec.structs.replace(DEFAULTS, url=url, replicas=3)))


async def test_stream_json_is_what_provision_applies_with_r3(nats_url: str) -> None:
    async with await angzarr_es.connect(config=_r3(nats_url)) as client:
        wanted = msgspec.to_builtins(client.stream_config())
    assert deploy_json("angzarr-events.stream.json") == wanted
    assert wanted["name"] == DEFAULTS.stream_name
    assert wanted["subjects"] == [
        events_filter(DEFAULTS.subject_prefix),
        f"{DEFAULTS.subject_prefix}.correlation.>",
    ]
    assert (wanted["retention"], wanted["max_age"], wanted["num_replicas"]) == ("limits", 0, 3)


async def test_server_accepts_the_stream_and_consumer_json(config: Config) -> None:
    # Renamed into this test's namespace and R1 (the suite runs one server).
    prefix = config.nats.subject_prefix
    stream = deploy_json("angzarr-events.stream.json")
    subjects = [events_filter(prefix), f"{prefix}.correlation.>"]
    stream.update(name=config.nats.stream_name, subjects=subjects, num_replicas=1)
    consumer = deploy_json("player-projector.consumer.json")
    # The angzarr docs' filter: every player subject, deeper ones included.
    assert consumer["filter_subject"] == f"{DEFAULTS.subject_prefix}.events.player.>"
    assert (consumer["ack_policy"], consumer["max_deliver"]) == ("explicit", 5)
    consumer.update(filter_subject=f"{prefix}.events.player.>", num_replicas=1)
    async with await angzarr_es.connect(config=config) as client:
        try:
            made = json.loads(await jsadmin.create_stream(client, stream))
            assert "error" not in made, made
            plan = await client.plan_provision()
            assert (plan.action, plan.changes) == ("none", {})
            body = json.dumps({"stream_name": stream["name"], "config": consumer}).encode()
            made = json.loads(
                await jsadmin.create_consumer(client, stream["name"], "player-projector", body)
            )
            assert "error" not in made, made
            assert made["config"]["max_deliver"] == 5
            assert made["config"]["durable_name"] == "player-projector"
        finally:
            await jsadmin.delete_stream(client, stream["name"])


async def test_a_projector_runs_on_the_deploy_consumer(config: Config) -> None:
    """The docs' consumer (`<prefix>.events.player.>`) refused
    `filters.domain("player")` without saying that the deep form was wanted,
    and `projector(name)` could not take the filter from the configuration
    (issue 19)."""
    prefix = config.nats.subject_prefix
    consumer = deploy_json("player-projector.consumer.json")
    consumer.update(filter_subject=f"{prefix}.events.player.>", num_replicas=1)
    spec = ConsumerSpec(name="player-projector", filter=consumer["filter_subject"])
    cfg = with_nats(config, consumers=[spec])
    async with await angzarr_es.connect(config=cfg) as client:
        try:
            await client.provision()
            body = json.dumps({"stream_name": cfg.nats.stream_name, "config": consumer}).encode()
            made = json.loads(
                await jsadmin.create_consumer(
                    client, cfg.nats.stream_name, "player-projector", body
                )
            )
            assert "error" not in made, made
            players = filters.domain("player")
            with pytest.raises(
                angzarr_es.ConsumerConfigError,
                match=r"filters\.domain\('player', deep=True\)",
            ):
                async with client.projector("player-projector", players, Recorder()):
                    pass
            await client.store("player").append("p", [deposit(1)], expected=0)
            deep = Recorder()
            async with client.projector(
                "player-projector", filters.domain("player", deep=True), deep
            ):
                await deep.wait_count(1)
            # The name alone takes the filter of its [[bus.nats.consumers]] entry.
            await client.store("player").append("p", [deposit(2)], expected=1)
            named = Recorder()
            async with client.projector("player-projector", named) as p:
                assert p.settings.subject == f"{prefix}.events.player.>"
                await named.wait_count(1)
            assert [d.events[0].sequence for d in named.seen] == [1]
        finally:
            for stream in (cfg.nats.stream_name, cfg.nats.snapshot_stream, cfg.nats.dlq_stream):
                await jsadmin.delete_stream(client, stream)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_compose_command_is_valid_for_nats_server(tmp_path: Path) -> None:
    """The single server's flags, with local ports and storage, start a real nats-server."""
    args = []
    for arg in compose_services()["nats"]["command"]:
        arg = arg.replace("/data", str(tmp_path))
        args.append(re.sub(r"^--http_port=8222$", f"--http_port={_free_port()}", arg))
    proc = subprocess.Popen(
        [find_nats_server(), *args, "-a", "127.0.0.1", "-p", "-1"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "Server is ready" in line:
                break
        else:
            pytest.fail("nats-server exited:\n" + "".join(seen))
        assert any("Starting JetStream" in line for line in seen)
        assert any("Starting http monitor" in line for line in seen)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
