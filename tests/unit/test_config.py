"""Configuration: the angzarr docs' TOML layout, env overrides, clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import angzarr_es
from angzarr_es import Config, ConfigError
from angzarr_es.config import redact_url


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
    with pytest.raises(ConfigError, match=r"^BUS_BACKEND='kafka' is not supported"):
        Config.load(None, {"BUS_BACKEND": "kafka"})
    # The file has no backend key: the variable is to blame, not the file.
    path = write(tmp_path, '[bus.nats]\nurl = "nats://file:1"\n')
    with pytest.raises(ConfigError, match=r"^BUS_BACKEND='kafka'"):
        Config.load(path, {"BUS_BACKEND": "kafka"})
    assert Config.load(None, {"BUS_BACKEND": " NATS "}).bus.backend == "nats"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:4222", "scheme 'http'"),
        ("nats://h:99999", "port '99999'"),
        ("nats://h:abc", "port 'abc'"),
        ("nats://:4222", "no host"),
        ("nats://a:4222,https://b", "scheme 'https'"),
        ("NATS://h:4222", "scheme 'NATS'"),  # nats-py would connect to host "nats"
        ("nats://u:p?w@h:4222", "percent-encoded"),
        ("nats://a:4222,ws://b:8080", "cannot be mixed"),
    ],
)
def test_a_bad_server_url_is_refused_naming_its_source(
    tmp_path: Path, url: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=f"^NATS_URL: .*{problem}"):
        Config.load(None, {"NATS_URL": url})
    path = write(tmp_path, f'[bus.nats]\nurl = "{url}"\n')
    with pytest.raises(ConfigError, match=f"bus.nats.url: .*{problem}"):
        Config.load(path, {})


@pytest.mark.parametrize(
    "url",
    [
        "nats://user:pw@host",
        "tls://h:4443",
        "wss://h/path",
        "ws://h:8080/path",
        "localhost:4222",
        "nats://[::1]:4222",
        "nats://u:p%3Fw@h",
    ],
)
def test_server_urls_nats_py_takes_are_accepted(url: str) -> None:
    assert Config.load(None, {"NATS_URL": url}).nats.servers == [url]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://ann:s3cret@host:4222", "nats://ann:***@host:4222"),
        ("nats://s3cretToken@host:4222", "nats://***@host:4222"),
        ("ann:s3c@ret@host:4222", "ann:***@host:4222"),
        ("nats://host:4222", "nats://host:4222"),
        # PostgreSQL DSNs: a URL's userinfo or query, or a key=value password.
        ("postgresql://bench:s3cret@db:5432/x", "postgresql://bench:***@db:5432/x"),
        (
            "postgresql://db/x?password=s3cret&sslmode=off",
            "postgresql://db/x?password=***&sslmode=off",
        ),
        ("host=db password='s3cret \\' phrase' port=5", "host=db password=*** port=5"),
        ("host=db password = s3&cret user=u", "host=db password = *** user=u"),
        ("host=db password='s3cret", "host=db password=***"),
        ("host=/var/run/postgresql user=u", "host=/var/run/postgresql user=u"),
    ],
)
def test_redact_url_hides_passwords_and_tokens(url: str, shown: str) -> None:
    assert redact_url(url) == shown


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
        ("[bus.nats]\ndeposed_leader_wait = -1\n", "bus.nats.deposed_leader_wait must be >= 0"),
        ("[bus.nats]\ndeposed_leader_wait = inf\n", "bus.nats.deposed_leader_wait"),
        ("[bus.nats]\nstream_discovery_interval = 0\n", "stream_discovery_interval must be > 0"),
        ("[bus.nats]\nstream_discovery_interval = nan\n", "bus.nats.stream_discovery_interval"),
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


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ('"7d"', 7 * 86400.0),
        ('"1h30m"', 5400.0),
        ('"90s"', 90.0),
        ('"500ms"', 0.5),
        ('"1.5h"', 5400.0),
        ('"2w"', 14 * 86400.0),
        ('"1y"', 365 * 86400.0),
        ('"30"', 30.0),
        ("604800", 604800.0),
    ],
)
def test_durations_are_seconds_or_strings_with_units(
    tmp_path: Path, value: str, seconds: float
) -> None:
    cfg = Config.load(write(tmp_path, f"[bus.nats]\nmax_age = {value}\n"), {})
    assert cfg.nats.max_age == seconds


def test_every_duration_takes_units(tmp_path: Path) -> None:
    text = (
        "[bus.nats]\n"
        'duplicate_window = "2m"\nrequest_timeout = "250ms"\nconnect_timeout = "3s"\n'
        'deposed_leader_wait = "1.5s"\nstream_discovery_interval = "1m"\n'
        "[[bus.nats.consumers]]\n"
        'name = "p"\nfilter = "x"\nack_wait = "1m"\nbackoff = ["1s", 5, "1m"]\n'
    )
    n = Config.load(write(tmp_path, text), {}).nats
    assert (n.duplicate_window, n.request_timeout, n.connect_timeout) == (120.0, 0.25, 3.0)
    assert (n.deposed_leader_wait, n.stream_discovery_interval) == (1.5, 60.0)
    assert (n.consumers[0].ack_wait, n.consumers[0].backoff) == (60.0, [1.0, 5.0, 60.0])


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('max_age = "7x"', "bus.nats.max_age"),
        ('max_age = "d"', "bus.nats.max_age"),
        ('connect_timeout = "soon"', "bus.nats.connect_timeout"),
        ('stream_discovery_interval = "often"', "bus.nats.stream_discovery_interval"),
        ('[[bus.nats.consumers]]\nname = "p"\nfilter = "x"\nbackoff = ["1s", "1q"]', "backoff[1]"),
    ],
)
def test_a_bad_duration_says_what_a_duration_is(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(write(tmp_path, f"[bus.nats]\n{text}\n"), {})
    message = str(info.value)
    assert key in message
    assert "is not a duration: give seconds (a number) or a string such as" in message
    assert '"7d"' in message


def test_a_duration_of_the_wrong_type_says_it_is_seconds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bus\.nats\.max_age: Expected `float`, got `bool`"):
        Config.load(write(tmp_path, "[bus.nats]\nmax_age = true\n"), {})
    with pytest.raises(ConfigError, match="a duration: seconds, or a string such as"):
        Config.load(write(tmp_path, "[bus.nats]\nmax_age = true\n"), {})


def test_a_bad_choice_lists_the_valid_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(write(tmp_path, "[bus.nats]\nreplay = 'magic'\n"), {})
    assert str(info.value).endswith(
        "bus.nats.replay: Invalid enum value 'magic' (valid: 'consumer', 'direct')"
    )


def test_the_cli_table_survives_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[cli]\nproto_modules = ["shop.orders_pb2"]\n')
    cfg = Config.load(path, {"NATS_URL": "nats://env:2"})
    assert cfg.cli.proto_modules == ["shop.orders_pb2"]
    assert Config().cli.proto_modules == []


def test_max_age_warns_on_validate_not_on_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The command line loads, then connects (which validates): one warning.
    path = write(tmp_path, '[bus.nats]\nmax_age = "1h"\n')
    with caplog.at_level(logging.WARNING, logger="angzarr_es"):
        cfg = Config.load(path, {})
        assert not caplog.records
        cfg.validate()
    (record,) = caplog.records
    assert record.getMessage() == (
        "bus.nats.max_age = 3600s: JetStream will DELETE events older than that"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (5,),
            "connect() takes a server URL or a list of them, such as 'nats://localhost:4222', not int 5",
        ),
        ((["nats://a:4222", 7],), "not list"),
        ((Config(),), "connect() takes a Config as a keyword: connect(config=...)"),
    ],
)
async def test_connect_refuses_arguments_of_the_wrong_type(
    args: tuple[object, ...], message: str
) -> None:
    with pytest.raises(TypeError) as info:
        await angzarr_es.connect(*args)  # type: ignore[arg-type]
    assert message in str(info.value)
    with pytest.raises(TypeError, match=r"connect\(config=\.\.\.\) takes a Config, not dict"):
        await angzarr_es.connect(config={"bus": {}})  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", ["/", "type.googleapis.com/", "type.example.com/a/"])
def test_type_url_prefix(tmp_path: Path, prefix: str) -> None:
    assert Config().nats.type_url_prefix == "type.googleapis.com/"
    cfg = Config.load(write(tmp_path, f'[bus.nats]\ntype_url_prefix = "{prefix}"\n'), {})
    assert cfg.nats.type_url_prefix == prefix


@pytest.mark.parametrize("prefix", ["", "type.googleapis.com", "a b/", "é/"])
def test_a_type_url_prefix_must_end_with_a_slash(tmp_path: Path, prefix: str) -> None:
    path = write(tmp_path, f'[bus.nats]\ntype_url_prefix = "{prefix}"\n')
    with pytest.raises(ConfigError, match=r"bus\.nats\.type_url_prefix must end with '/'"):
        Config.load(path, {})
