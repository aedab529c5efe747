"""deploy/ parses, agrees with the library's defaults, and the server accepts it."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

import angzarr_es
from angzarr_es.config import BusConfig, Config, NatsConfig
from angzarr_es.embedded import find_nats_server
from angzarr_es.store import _snapshots
from angzarr_es.subjects import events_filter
from tests.conftest import delete_stream

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DEFAULTS = NatsConfig()


def _json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "nats" / name).read_text())
    return data


def _yaml(*parts: str) -> Any:
    return yaml.safe_load(DEPLOY.joinpath(*parts).read_text())


def _r3(url: str) -> Config:
    return Config(bus=BusConfig(nats=msgspec.structs.replace(DEFAULTS, url=url, replicas=3)))


async def test_stream_json_is_what_provision_applies_with_r3(nats_url: str) -> None:
    async with await angzarr_es.connect(config=_r3(nats_url)) as client:
        wanted = msgspec.to_builtins(client.stream_config())
    assert _json("angzarr-events.stream.json") == wanted
    assert wanted["name"] == DEFAULTS.stream_name
    assert wanted["subjects"] == [
        events_filter(DEFAULTS.subject_prefix),
        f"{DEFAULTS.subject_prefix}.correlation.>",
    ]
    assert (wanted["retention"], wanted["max_age"], wanted["num_replicas"]) == ("limits", 0, 3)


def test_snapshot_stream_json_is_what_provision_applies_with_r3() -> None:
    wanted = msgspec.to_builtins(
        _snapshots.stream_config(msgspec.structs.replace(DEFAULTS, replicas=3))
    )
    assert _json("angzarr-snapshots.stream.json") == wanted
    assert wanted["name"] == DEFAULTS.snapshot_stream == "angzarr-snapshots"


async def test_server_accepts_the_stream_and_consumer_json(config: Config) -> None:
    # Renamed into this test's namespace and R1 (the suite runs one server).
    prefix = config.nats.subject_prefix
    stream = _json("angzarr-events.stream.json")
    subjects = [events_filter(prefix), f"{prefix}.correlation.>"]
    stream.update(name=config.nats.stream_name, subjects=subjects, num_replicas=1)
    consumer = _json("player-projector.consumer.json")
    assert consumer["filter_subject"] == f"{DEFAULTS.subject_prefix}.events.player.*"
    assert (consumer["ack_policy"], consumer["max_deliver"]) == ("explicit", 5)
    consumer.update(filter_subject=f"{prefix}.events.player.*", num_replicas=1)
    async with await angzarr_es.connect(config=config) as client:
        wire = client._wire
        try:
            made = json.loads(
                await wire.js.call(
                    f"$JS.API.STREAM.CREATE.{stream['name']}", json.dumps(stream).encode()
                )
            )
            assert "error" not in made, made
            plan = await client.plan_provision()
            assert (plan.action, plan.changes) == ("none", {})
            body = json.dumps({"stream_name": stream["name"], "config": consumer}).encode()
            made = json.loads(
                await wire.js.call(
                    f"$JS.API.CONSUMER.CREATE.{stream['name']}.player-projector", body
                )
            )
            assert "error" not in made, made
            assert made["config"]["max_deliver"] == 5
            assert made["config"]["durable_name"] == "player-projector"
        finally:
            await delete_stream(client, stream["name"])


def test_helm_values_use_the_seed_keys_and_the_library_defaults() -> None:
    values = _yaml("helm", "angzarr-values.yaml")
    nats = values["bus"]["nats"]
    assert values["bus"]["backend"] == "nats"
    assert nats["jetstream"] is True
    assert nats["streamName"] == DEFAULTS.stream_name == _json("angzarr-events.stream.json")["name"]
    assert nats["replicas"] == _json("angzarr-events.stream.json")["num_replicas"] == 3
    assert nats["url"].startswith("nats://angzarr-nats.")

    chart = _yaml("helm", "nats-values.yaml")["config"]
    assert chart["cluster"] == {"enabled": True, "replicas": 3}
    assert chart["jetstream"]["enabled"] is True
    assert chart["jetstream"]["fileStore"]["enabled"] is True
    assert chart["monitor"]["enabled"] is True

    # The ConfigMap carries the same settings in angzarr_es's own TOML layout.
    configmap = _yaml("k8s", "angzarr-es-config.yaml")
    toml = configmap["data"]["config.toml"].encode()
    loaded = msgspec.toml.decode(toml, type=Config)
    loaded.validate()
    assert loaded.bus.backend == values["bus"]["backend"]
    assert loaded.nats.url == nats["url"]
    assert loaded.nats.jetstream == nats["jetstream"]
    assert loaded.nats.stream_name == nats["streamName"]
    assert loaded.nats.replicas == nats["replicas"]
    assert loaded.nats.monitor_url == nats["monitorUrl"]


def _services() -> dict[str, Any]:
    services: dict[str, Any] = _yaml("docker-compose.yml")["services"]
    return services


def test_compose_cluster_is_three_routed_jetstream_servers() -> None:
    services = _services()
    cluster = {n: s for n, s in services.items() if "cluster" in s.get("profiles", [])}
    assert sorted(cluster) == ["nats-1", "nats-2", "nats-3"]
    for svc in services.values():
        args = svc["command"]
        assert "--jetstream" in args
        assert "--http_port=8222" in args
        assert any(p.endswith(":8222") for p in svc["ports"])
        assert svc["image"].startswith("nats:2.")
    for name, svc in cluster.items():
        flags = dict(a.split("=", 1) for a in svc["command"] if "=" in a)
        assert flags["--server_name"] == name
        assert flags["--cluster_name"] == "angzarr"
        others = {f"nats://{o}:6222" for o in cluster if o != name}
        assert set(flags["--routes"].split(",")) == others


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_compose_command_is_valid_for_nats_server(tmp_path: Path) -> None:
    """The single server's flags, with local ports and storage, start a real nats-server."""
    args = []
    for arg in _services()["nats"]["command"]:
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
