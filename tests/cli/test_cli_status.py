"""`angzarr-es status` as a subprocess: what it reports of a healthy server and
of a missing stream, its options, and a server that is down at start-up."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

import angzarr_es
from angzarr_es.config import Config
from angzarr_es.embedded import EmbeddedServer
from angzarr_es.pb import player_pb2
from tests.support import jsadmin
from tests.support.cli import (
    UNREACHABLE,
    cli_env,
    one_error_line,
    run_cli,
    start_cli,
    stop,
    unreachable_fails,
    write_config,
)
from tests.support.jsadmin import messages as js


def test_status_without_a_server() -> None:
    unreachable_fails("status")


async def test_status_flags_a_missing_stream_then_reports_lag(
    conf: Path, client: angzarr_es.Client, config: Config
) -> None:
    done = run_cli("status", "--config", str(conf))
    assert done.returncode == 1
    assert "does not exist (run `angzarr-es provision`)" in done.stdout

    await client.provision()
    store = client.store("player")
    for i in range(3):
        await store.append(f"p{i}", [player_pb2.PlayerRegistered(name=str(i))], expected=0)
    name = config.nats.stream_name
    durable = js.ConsumerConfig(
        name="player-projector",
        durable_name="player-projector",
        ack_policy="explicit",
        filter_subject=f"{config.nats.subject_prefix}.events.player.*",
    )
    body = js.encode(js.ConsumerCreateRequest(stream_name=name, config=durable))
    await jsadmin.create_consumer(client, name, "player-projector", body)

    done = run_cli("status", "--json", "--config", str(conf), env=cli_env(ANGZARR_ES_PLAIN="1"))
    assert done.returncode == 0, done.stdout
    health = json.loads(done.stdout)
    (stream,) = [s for s in health["streams"] if s["name"] == name]
    assert stream["is_event_stream"]
    assert stream["messages"] == 3
    (consumer,) = [c for c in health["consumers"] if c["stream"] == name]
    assert consumer["name"] == "player-projector"
    assert consumer["num_pending"] == 3

    done = run_cli("status", "--config", str(conf), env=cli_env(ANGZARR_ES_PLAIN="1"))
    assert done.returncode == 0
    assert f"{name} *" in done.stdout
    assert f"{name}/player-projector" in done.stdout
    assert done.stdout.rstrip().endswith("healthy")


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_status_of_a_healthy_server_is_unchanged(
    config: Config, tmp_path: Path, json_flag: list[str]
) -> None:
    conf = write_config(tmp_path / "angzarr.toml", config)
    done = run_cli("status", "--config", str(conf), *json_flag)
    # No stream provisioned: a problem, but the server is reachable.
    assert done.returncode == 1
    assert done.stderr == ""
    if json_flag:
        health = json.loads(done.stdout)
        assert health["reachable"] is True
        assert health["server_url"] == config.nats.servers[0]
    else:
        assert "UNREACHABLE" not in done.stdout
        assert "server     reachable" in done.stdout


async def test_status_watch_refreshes(conf: Path, client: angzarr_es.Client) -> None:
    await client.provision()
    done = run_cli(
        "status", "--config", str(conf), "--json", "--watch", "--interval", "0.05", "--count", "3"
    )
    assert done.returncode == 0, done.stderr
    screens = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(screens) == 3
    assert len({s["checked_at"] for s in screens}) == 3


async def test_status_with_rich_tables(conf: Path, client: angzarr_es.Client) -> None:
    pytest.importorskip("rich")
    await client.provision()
    # Rich draws tables on a terminal only: FORCE_COLOR claims one.
    env = cli_env(COLUMNS="200", FORCE_COLOR="1")
    del env["ANGZARR_ES_PLAIN"]
    done = run_cli("status", "--config", str(conf), env=env)
    assert done.returncode == 0, done.stderr
    shown = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
    assert "┃ stream" in shown  # a rich table, not the plain fallback
    assert f"{client.config.nats.stream_name} *" in shown


@pytest.mark.parametrize("count", ["0", "-1", "x"])
def test_status_count_must_be_a_positive_number(conf: Path, count: str) -> None:
    done = run_cli("status", "--config", str(conf), "--watch", "--count", count)
    assert done.returncode == 2
    assert "argument --count" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("where", "url"),
    [
        ("--monitor-url", "notaurl"),
        ("--monitor-url", "http://"),
        ("NATS_MONITOR_URL", "localhost:8222"),
        ("bus.nats.monitor_url", "ftp://localhost:8222"),
    ],
)
def test_status_refuses_a_monitoring_url_that_is_not_one(conf: Path, where: str, url: str) -> None:
    env = cli_env()
    args = ["status", "--config", str(conf)]
    if where == "--monitor-url":
        args += ["--monitor-url", url]
    elif where == "NATS_MONITOR_URL":
        env["NATS_MONITOR_URL"] = url
    else:
        conf.write_text(conf.read_text() + f'monitor_url = "{url}"\n')
    done = run_cli(*args, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    line = one_error_line(done.stderr)
    assert f"{where} {url!r} is not an http:// or https:// URL" in line
    assert done.stdout == ""


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_status_reports_an_unreachable_monitoring_endpoint(
    conf: Path, json_flag: list[str]
) -> None:
    url = "http://127.0.0.1:1"
    done = run_cli("status", "--config", str(conf), "--monitor-url", url, *json_flag)
    assert done.returncode == 1
    problem = f"monitoring endpoint {url}: no answer from /varz: "
    if json_flag:
        health = json.loads(done.stdout)
        assert health["monitor_url"] == url
        assert any(p.startswith(problem) for p in health["problems"]), health["problems"]
    else:
        # The same endpoint in both outputs, and no claim that none was given.
        assert f"problem: {problem}" in done.stdout
        assert "no monitoring URL" not in done.stdout
        assert f"(monitoring endpoint {url} gave nothing, see the problems below)" in done.stdout


def test_status_says_a_monitoring_url_at_the_client_port_is_the_client_port(
    conf: Path, config: Config
) -> None:
    client_port = config.nats.servers[0].replace("nats://", "http://")
    done = run_cli("status", "--config", str(conf), "--monitor-url", client_port)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr == ""
    (problem,) = [line for line in done.stdout.splitlines() if "problem: monitoring" in line]
    assert problem == (
        f"! problem: monitoring endpoint {client_port}: it speaks the NATS client protocol: "
        "that is the client port, not the monitoring port (nats-server's `http` setting, "
        "e.g. http://localhost:8222)"
    )


# -- no server at start-up -------------------------------------------------------------


def unreachable_problem(health: dict[str, object], url: str) -> None:
    assert health["reachable"] is False
    assert health["ok"] is False
    assert health["streams"] == []
    problems = health["problems"]
    assert isinstance(problems, list)
    assert len(problems) == 1
    assert problems[0].startswith(f"server unreachable: cannot connect to NATS at {url}: ")


def test_status_json_reports_an_unreachable_server_at_start_up() -> None:
    done = run_cli("status", "--json", env=cli_env(NATS_URL=UNREACHABLE))
    assert done.returncode == 1
    assert done.stderr == ""  # stdout is the whole answer: one JSON document
    (line,) = done.stdout.splitlines()
    health = json.loads(line)
    unreachable_problem(health, UNREACHABLE)
    assert health["server_url"] == UNREACHABLE


def test_status_json_names_refused_credentials_and_prints_no_password() -> None:
    with EmbeddedServer(
        monitor_port=None, extra_config="authorization { user: app, password: s3cret }"
    ) as server:
        port = server.url.rpartition(":")[2]
        refused = f"nats://app:wrong-s3cret@127.0.0.1:{port}"
        done = run_cli("status", "--json", env=cli_env(NATS_URL=refused))
        assert done.returncode == 1
        assert done.stderr == ""
        (line,) = done.stdout.splitlines()
        health = json.loads(line)
        assert health["reachable"] is False
        assert health["ok"] is False
        (problem,) = health["problems"]
        assert problem.startswith("server refused the connection: ")
        assert "s3cret" not in done.stdout
        assert health["server_url"] == f"nats://app:***@127.0.0.1:{port}"
    done = run_cli("status", "--json", env=cli_env(NATS_URL="nats://app:s3cret@127.0.0.1:1"))
    assert done.returncode == 1
    assert "s3cret" not in done.stdout + done.stderr


def test_status_watch_json_keeps_polling_an_unreachable_server() -> None:
    env = cli_env(NATS_URL=UNREACHABLE)
    args = ["status", "--json", "--watch", "--interval", "0.05", "--count", "2"]
    done = run_cli(*args, env=env)
    assert done.returncode == 1
    assert done.stderr == ""
    ticks = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(ticks) == 2
    for health in ticks:
        unreachable_problem(health, UNREACHABLE)
    assert ticks[0]["checked_at"] != ticks[1]["checked_at"]


def test_status_screen_shows_an_unreachable_server_at_start_up() -> None:
    env = cli_env(NATS_URL=UNREACHABLE)
    done = run_cli("status", env=env)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"angzarr-es status  {UNREACHABLE}  checked ")
    assert lines[1] == "! server     UNREACHABLE"
    assert lines[2].startswith(
        f"! problem: server unreachable: cannot connect to NATS at {UNREACHABLE}: "
    )
    assert len(lines) == 3  # nothing about JetStream or streams it could not see
    # ... and the usual one error line for scripts.
    assert f"cannot connect to NATS at {UNREACHABLE}" in one_error_line(done.stderr)

    done = run_cli("status", "--watch", "--interval", "0.05", "--count", "2", env=env)
    assert done.returncode == 1
    assert done.stderr == ""
    assert done.stdout.count("! server     UNREACHABLE") == 2


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port: int = s.getsockname()[1]
        return port


def test_status_watch_picks_the_server_up_when_it_comes_back() -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    watch = start_cli("status", "--json", "--watch", "--interval", "0.1", env=cli_env(NATS_URL=url))
    try:
        down = json.loads(watch.until(lambda line: '"reachable":false' in line))
        unreachable_problem(down, url)
        with EmbeddedServer(port=port, monitor_port=None):
            up = json.loads(watch.until(lambda line: '"reachable":true' in line))
            assert up["server_url"] == url
            assert up["jetstream_enabled"] is True
            assert not any(p.startswith("server unreachable") for p in up["problems"])
        # Gone again under the connection: the same report, and the watch goes on.
        gone = json.loads(watch.until(lambda line: '"reachable":false' in line))
        assert gone["problems"][0].startswith("server unreachable: ")
        assert gone["server_url"] == url
    finally:
        stop(watch)
