"""Configuration: the angzarr docs' TOML layout, env overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from angzarr_es import Config, ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "angzarr.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    cfg = Config.load(None, {})
    assert cfg.bus.backend == "nats"
    assert cfg.nats.servers == ["nats://localhost:4222"]
    assert cfg.nats.jetstream is True
    assert cfg.nats.stream_name == "angzarr-events"


def test_the_docs_layout(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[bus]
backend = "nats"

[bus.nats]
url = "nats://n1:4222"
jetstream = false
stream_name = "my-events"
replicas = 3
subject_prefix = "acme.prod"
""",
    )
    cfg = Config.load(path, {})
    assert cfg.nats.servers == ["nats://n1:4222"]
    assert cfg.nats.jetstream is False
    assert cfg.nats.stream_name == "my-events"
    assert cfg.nats.replicas == 3
    assert cfg.nats.subject_prefix == "acme.prod"


@pytest.mark.parametrize(
    ("value", "servers"),
    [
        ('["nats://a:1", "nats://b:2"]', ["nats://a:1", "nats://b:2"]),
        ('"nats://a:1, nats://b:2,nats://c:3"', ["nats://a:1", "nats://b:2", "nats://c:3"]),
    ],
)
def test_cluster_urls(tmp_path: Path, value: str, servers: list[str]) -> None:
    cfg = Config.load(write(tmp_path, f"[bus.nats]\nurl = {value}\n"), {})
    assert cfg.nats.servers == servers


def test_env_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[bus]\nbackend = "nats"\n[bus.nats]\nurl = "nats://file:1"\n')
    cfg = Config.load(path, {"NATS_URL": "nats://env:2,nats://env:3", "BUS_BACKEND": "nats"})
    assert cfg.nats.servers == ["nats://env:2", "nats://env:3"]


def test_unsupported_backend_from_env(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kafka"):
        Config.load(None, {"BUS_BACKEND": "kafka"})
    assert Config.load(None, {"BUS_BACKEND": " NATS "}).bus.backend == "nats"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[bus.nats]\nurll = 'x'\n", "urll"),
        ("[bus.nats]\nreplicas = 'three'\n", "bus.nats.replicas"),
        ("[bus.nats]\nreplicas = 2\n", "bus.nats.replicas"),
        ("[bus]\nbackend = 'amqp'\n", "bus.backend"),
        ("[bus]\nbackend = 1\n", "bus.backend"),
        ("[buss]\n", "buss"),
        ("[bus.nats]\nstream_name = 'a.b'\n", "bus.nats.stream_name"),
        ("[bus.nats]\nrequest_timeout = 0\n", "bus.nats.request_timeout"),
        ("[bus.nats]\nmax_age = -1\n", "bus.nats.max_age"),
        ("[bus.nats]\nurl = []\n", "bus.nats.url"),
        ("[bus.nats]\nreplay = 'magic'\n", "bus.nats.replay"),
        ("[bus.nats]\nduplicate_window = inf\n", "bus.nats.duplicate_window"),
        ("[bus.nats]\nstream_name = 'a'\nsnapshot_stream_name = 'a'\n", "three different"),
        ("[bus.nats]\ndlq_stream = 'angzarr-events'\n", "three different"),
        ("[bus.nats]\nmax_age = inf\n", "bus.nats.max_age"),
        ("[bus.nats]\nconnect_timeout = inf\n", "bus.nats.connect_timeout"),
        ("[bus.nats]\nrequest_timeout = nan\n", "bus.nats.request_timeout"),
        ("[[bus.nats.consumers]]\nname = 'p'\nfilter = 'x'\nbackoff = [inf]\n", "consumers[p]"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        Config.load(path, {})
    assert key in str(info.value)
    assert str(path) in str(info.value)


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[bus\n")
    with pytest.raises(ConfigError, match="TOML"):
        Config.load(path, {})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Config.load(tmp_path / "nope.toml", {})
