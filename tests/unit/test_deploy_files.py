"""deploy/ parses and agrees with the library's defaults (no server needed)."""

from __future__ import annotations

import msgspec

from angzarr_es.config import BusConfig, Config, NatsConfig
from angzarr_es.testing import InMemoryClient
from tests.support.deploy import compose_services, deploy_json, deploy_yaml

DEFAULTS = NatsConfig()


async def test_snapshot_stream_json_is_what_provision_applies_with_r3() -> None:
    nats = msgspec.structs.replace(DEFAULTS, replicas=3)
    plan = await InMemoryClient(config=Config(bus=BusConfig(nats=nats))).plan_provision()
    (snapshots,) = [s.config for s in plan.streams if s.role == "snapshot stream"]
    wanted = msgspec.to_builtins(snapshots)
    assert deploy_json("angzarr-snapshots.stream.json") == wanted
    assert wanted["name"] == DEFAULTS.snapshot_stream == "angzarr-snapshots"


def test_helm_values_use_the_seed_keys_and_the_library_defaults() -> None:
    values = deploy_yaml("helm", "angzarr-values.yaml")
    nats = values["bus"]["nats"]
    assert values["bus"]["backend"] == "nats"
    assert nats["jetstream"] is True
    assert (
        nats["streamName"]
        == DEFAULTS.stream_name
        == deploy_json("angzarr-events.stream.json")["name"]
    )
    assert nats["replicas"] == deploy_json("angzarr-events.stream.json")["num_replicas"] == 3
    assert nats["url"].startswith("nats://angzarr-nats.")

    chart = deploy_yaml("helm", "nats-values.yaml")["config"]
    assert chart["cluster"] == {"enabled": True, "replicas": 3}
    assert chart["jetstream"]["enabled"] is True
    assert chart["jetstream"]["fileStore"]["enabled"] is True
    assert chart["monitor"]["enabled"] is True

    # The ConfigMap carries the same settings in angzarr_es's own TOML layout.
    configmap = deploy_yaml("k8s", "angzarr-es-config.yaml")
    toml = configmap["data"]["config.toml"].encode()
    loaded = msgspec.toml.decode(toml, type=Config)
    loaded.validate()
    assert loaded.bus.backend == values["bus"]["backend"]
    assert loaded.nats.url == nats["url"]
    assert loaded.nats.jetstream == nats["jetstream"]
    assert loaded.nats.stream_name == nats["streamName"]
    assert loaded.nats.replicas == nats["replicas"]
    assert loaded.nats.monitor_url == nats["monitorUrl"]
    # Beside angzarr's coordinator, whose bus makes a stream per domain.
    assert loaded.nats.stream_layout == "per-domain"


def test_compose_cluster_is_three_routed_jetstream_servers() -> None:
    services = compose_services()
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
