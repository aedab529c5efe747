"""Every `angzarr-es` subcommand as a subprocess against a real server: output and exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import prometheus_client as prom
import pytest

import angzarr_es
from angzarr_es import metrics, tracing
from angzarr_es._nats import messages as js
from angzarr_es.config import Config
from angzarr_es.embedded import EmbeddedServer, find_nats_server
from angzarr_es.pb import player_pb2
from tests.cli_helpers import cli_env, run_cli, start_cli, stderr_lines, stop, write_config
from tests.conftest import delete_stream

UNREACHABLE = "nats://127.0.0.1:1"


@pytest.fixture
def conf(config: Config, tmp_path: Path) -> Path:
    """A TOML file for this test's server, stream and subject prefix."""
    return write_config(tmp_path / "angzarr.toml", config)


@pytest.fixture
async def client(config: Config) -> AsyncIterator[angzarr_es.Client]:
    """A connected client; the test's stream (if anything made it) is deleted afterwards."""
    async with await angzarr_es.connect(config=config) as c:
        yield c
        await delete_stream(c, config.nats.stream_name)


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("angzarr-es: error: ")
    return lines[0]


def test_help_lists_every_subcommand() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    for name in ("server", "provision", "status", "show", "tail", "demo", "bench"):
        assert name in done.stdout


# -- server ------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_server_prints_urls_serves_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    data = tmp_path / "data"
    server = start_cli("server", "--data-dir", str(data), "--port", "-1", "--monitor-port", "-1")
    try:
        head = server.until(lambda line: "nats-server" in line and "running" in line)
        url = server.until(lambda line: "client URL" in line).split()[2]
        monitor = server.until(lambda line: "monitoring" in line).split()[1]
        server.until(lambda line: line.startswith("Ctrl-C"))
        pid = int(head.rpartition("pid ")[2].rstrip(")"))
        assert url.startswith("nats://127.0.0.1:")
        assert monitor.startswith("http://127.0.0.1:")

        env = cli_env(NATS_URL=url)
        done = run_cli("provision", env=env)
        assert done.returncode == 0, done.stderr
        assert "stream angzarr-events" in done.stdout
        assert ") created\n" in done.stdout
        done = run_cli("status", "--json", "--monitor-url", monitor, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        health = json.loads(done.stdout)
        assert health["ok"] is True
        assert health["server"]["version"] == health["server_version"]
        assert (data / "jetstream").is_dir()

        server.proc.send_signal(sig)
        rest = server.rest()
        assert server.proc.returncode == 0, server.proc.stderr.read() if server.proc.stderr else ""
        assert rest[-1] == "nats-server stopped"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the nats-server child is gone too
    finally:
        stop(server)


def test_server_reports_a_busy_port_in_one_line(tmp_path: Path) -> None:
    first = start_cli(
        "server", "--data-dir", str(tmp_path / "a"), "--port", "-1", "--monitor-port", "-1"
    )
    try:
        url = first.until(lambda line: "client URL" in line).split()[2]
        port = url.rpartition(":")[2]
        done = run_cli(
            "server", "--data-dir", str(tmp_path / "b"), "--port", port, "--monitor-port", "-1"
        )
        assert done.returncode == 1
        line = one_error_line(done.stderr)
        # The server's own reason, not just that it failed.
        assert "nats-server did not become ready: [FTL] " in line
        assert "address already in use" in line
    finally:
        first.proc.send_signal(signal.SIGTERM)
        first.rest()
        stop(first)


@pytest.mark.parametrize("where", ["a file", "under a file", "in /proc"])
def test_server_refuses_a_data_dir_it_cannot_use(tmp_path: Path, where: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    data = {
        "a file": afile,
        "under a file": afile / "data",
        "in /proc": Path("/proc/angzarr-es-data"),  # not even root may create this
    }[where]
    done = run_cli("server", "--data-dir", str(data), "--port", "-1", "--monitor-port", "-1")
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert f"--data-dir {data}: cannot use it as the data directory" in line
    if where == "a file":
        assert line.endswith("it exists and is not a directory")


def test_embedded_server_refuses_a_data_dir_it_cannot_use(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(angzarr_es.StoreUnavailable, match="data directory: it exists and is not"):
        EmbeddedServer(store_dir=afile).start()


# -- provision ---------------------------------------------------------------------


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
    info = js.stream_info(await client._wire.js.call(f"$JS.API.STREAM.INFO.{name}"))
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
    assert "would be created or checked" in done.stdout
    done = run_cli("provision", "--config", str(conf))
    assert done.returncode == 0, done.stderr
    assert "consumer player-projector" in done.stdout
    names = msgspec.json.decode(
        await client._wire.js.call(f"$JS.API.CONSUMER.NAMES.{n.stream_name}")
    )
    assert names["consumers"] == ["player-projector"]
    for stream in (dlq, n.snapshot_stream):
        info = js.stream_info(await client._wire.js.call(f"$JS.API.STREAM.INFO.{stream}"))
        assert info.error is None, stream
        await delete_stream(client, stream)
    again = run_cli("provision", "--config", str(conf))
    assert again.returncode == 0, again.stderr
    await delete_stream(client, dlq)
    await delete_stream(client, n.snapshot_stream)


async def test_provision_dry_run_shows_differences_then_fixes_them(
    conf: Path, client: angzarr_es.Client, config: Config
) -> None:
    # The seed's `nats stream add ... --max-age 7d`: would delete week-old events.
    seeded = msgspec.structs.replace(client.stream_config(), max_age=7 * 86400 * js.NANOS)
    await client._wire.js.call(f"$JS.API.STREAM.CREATE.{seeded.name}", js.encode(seeded))
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
    await client._wire.js.call(f"$JS.API.STREAM.CREATE.{memory.name}", js.encode(memory))
    done = run_cli("provision", "--dry-run", "--config", str(conf))
    assert done.returncode == 1
    assert "cannot be changed in place" in done.stdout
    assert "  storage: 'memory' -> 'file'" in done.stdout
    done = run_cli("provision", "--config", str(conf))
    assert done.returncode == 1
    assert "exists with storage='memory'" in one_error_line(done.stderr)


# -- status ------------------------------------------------------------------------


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
    await client._wire.js.call(f"$JS.API.CONSUMER.CREATE.{name}.player-projector", body)

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


async def test_status_watch_refreshes(conf: Path, client: angzarr_es.Client) -> None:
    await client.provision()
    done = run_cli(
        "status", "--config", str(conf), "--json", "--watch", "--interval", "0.05", "--count", "3"
    )
    assert done.returncode == 0, done.stderr
    screens = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(screens) == 3
    assert len({s["checked_at"] for s in screens}) == 3


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


def test_status_reports_an_unreachable_monitoring_endpoint(conf: Path) -> None:
    done = run_cli("status", "--config", str(conf), "--monitor-url", "http://127.0.0.1:1")
    assert done.returncode == 1
    assert "problem: monitoring endpoint: http://127.0.0.1:1/" in done.stdout


# -- show --------------------------------------------------------------------------


async def test_show_prints_history_as_table_and_json(conf: Path, client: angzarr_es.Client) -> None:
    await client.provision()
    pid = uuid.uuid4()
    store = client.store("player")
    await store.append(
        pid,
        [
            player_pb2.PlayerRegistered(name="Alice"),
            player_pb2.FundsDeposited(amount_cents=500, currency="EUR"),
        ],
        expected=0,
        correlation_id="corr-1",
    )
    await store.append(pid, [player_pb2.FundsDeposited(amount_cents=7, currency="EUR")], expected=2)

    env = cli_env(ANGZARR_ES_PLAIN="1")
    done = run_cli("show", "player", str(pid), "--config", str(conf), env=env)
    assert done.returncode == 0, done.stderr
    assert f"player/{pid}: 3 event(s) shown, next sequence 3" in done.stdout
    assert "examples.player.PlayerRegistered  corr-1" in done.stdout
    assert '{"amount_cents":"7","currency":"EUR"}' in done.stdout

    done = run_cli(
        "show", "player", str(pid), "--from", "1", "--to", "3", "--json", "--config", str(conf)
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["sequence"] for r in rows] == [1, 2]
    assert rows[0]["event"] == {"amount_cents": "500", "currency": "EUR"}
    assert rows[0]["correlation_id"] == "corr-1"
    assert rows[1]["correlation_id"] == ""
    assert rows[0]["type"] == "examples.player.FundsDeposited"


async def test_show_error_paths(conf: Path, client: angzarr_es.Client) -> None:
    await client.provision()
    await client.store("player").append("known", [player_pb2.PlayerRegistered()], expected=0)
    done = run_cli("show", "hand", "known", "--config", str(conf))
    assert done.returncode == 1
    assert "unknown domain 'hand'" in one_error_line(done.stderr)
    done = run_cli("show", "player", "nobody", "--config", str(conf))
    assert done.returncode == 1
    assert "player aggregate 'nobody' has no events" in one_error_line(done.stderr)
    done = run_cli("show", "no.such", "x", "--config", str(conf))
    assert done.returncode == 2
    assert "domain 'no.such' must be" in one_error_line(done.stderr)
    done = run_cli("show", "player", "x", "--from", "3", "--to", "1", "--config", str(conf))
    assert done.returncode == 2
    one_error_line(done.stderr)


# -- tail --------------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True])
async def test_tail_follows_new_events(
    conf: Path, client: angzarr_es.Client, config: Config, as_json: bool
) -> None:
    await client.provision()
    store = client.store("player")
    await store.append("before", [player_pb2.PlayerRegistered(name="old")], expected=0)
    args = ["tail", "player", "--count", "3", "--config", str(conf)]
    tail = start_cli(*args, *(["--json"] if as_json else []))
    notices = stderr_lines(tail)
    try:
        # The banner and notices go to stderr: stdout is events only.
        ready = notices.until(lambda line: line.startswith("tailing "))
        assert f"{config.nats.subject_prefix}.events.player.>" in ready
        await client.store("hand").append("h1", [player_pb2.PlayerRegistered()], expected=0)
        junk = f"{config.nats.subject_prefix}.events.player.junk"
        await client._wire.nc.publish(junk, b"\xff\xff")  # not a commit
        await client._wire.nc.flush()  # `until` below blocks this event loop
        skipped = notices.until(lambda line: line.startswith("skipped a message"))
        assert junk in skipped
        # A stale append from another process reaches the server and is
        # refused there: core subscribers see its publish, tail must not.
        async with await angzarr_es.connect(config=config) as rival:
            with pytest.raises(angzarr_es.ConcurrencyError):
                await rival.store("player").append(
                    "before", [player_pb2.PlayerRegistered(name="refused")], expected=0
                )
        await store.append(
            "p1",
            [player_pb2.PlayerRegistered(name="Bob"), player_pb2.FundsDeposited(amount_cents=9)],
            expected=0,
        )
        what_if = client.store("player", edition="what-if")
        await what_if.append("p2", [player_pb2.PlayerRegistered(name="Eve")], expected=0)
        lines = tail.rest()
        assert tail.proc.returncode == 0
        assert notices.rest() == [ready, skipped]
    finally:
        stop(tail)
    assert len(lines) == 3, lines
    if as_json:
        rows = [json.loads(line) for line in lines]
        assert [(r["id"], r["sequence"]) for r in rows] == [("p1", 0), ("p1", 1), ("p2", 0)]
        assert rows[1]["event"] == {"amount_cents": "9"}
        assert all(r["domain"] == "player" for r in rows)
        assert [r["edition"] for r in rows] == ["", "", "what-if"]
    else:
        assert "player/p1  #0  examples.player.PlayerRegistered" in lines[0]
        assert "player/p2@what-if  #0" in lines[2]
        assert '{"name":"Eve"}' in lines[2]


def test_tail_without_the_event_stream_says_how_to_create_it(conf: Path) -> None:
    done = run_cli("tail", "player", "--config", str(conf))
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    assert "stream not found" in line
    assert "angzarr-es provision" in line


def test_tail_refuses_a_filter_outside_the_prefix(conf: Path) -> None:
    done = run_cli("tail", "other.events.>", "--config", str(conf))
    assert done.returncode == 2
    assert "is not under" in one_error_line(done.stderr)


# -- bench -------------------------------------------------------------------------


def test_bench_passes_arguments_and_exit_status_through(tmp_path: Path) -> None:
    pkg = tmp_path / "benchmarks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(
        "import os, sys\nprint('args', sys.argv[1:], os.environ.get('NATS_URL'))\nsys.exit(3)\n"
    )
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    env["NATS_URL"] = "nats://example:4222"
    # From tmp_path: `python -m` puts the working directory first on sys.path.
    done = run_cli("bench", "--quick", "-n", "5", env=env, cwd=tmp_path)
    assert done.returncode == 3
    assert "args ['--quick', '-n', '5'] nats://example:4222" in done.stdout


def test_bench_without_the_package_says_so() -> None:
    done = run_cli("bench", env=cli_env(ANGZARR_ES_BENCH_MODULE="no_such_benchmarks"))
    assert done.returncode == 2
    assert "no_such_benchmarks package is not importable" in one_error_line(done.stderr)


# -- errors common to every subcommand -----------------------------------------


@pytest.mark.parametrize(
    "args",
    [["provision"], ["status"], ["show", "player", "x"], ["tail", "player"], ["demo"]],
)
def test_unreachable_server_is_one_line_and_exit_1(args: list[str]) -> None:
    done = run_cli(*args, env=cli_env(NATS_URL=UNREACHABLE))
    assert done.returncode == 1
    assert f"cannot connect to NATS at {UNREACHABLE}" in one_error_line(done.stderr)


def test_a_server_that_never_answers_is_a_timeout(conf: Path) -> None:
    # A socket that listens and never accepts: the TCP handshake completes
    # (kernel backlog) and the server's INFO never comes, like an unroutable
    # address whose SYNs go unanswered.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"nats://127.0.0.1:{silent.getsockname()[1]}"
        conf.write_text(conf.read_text() + "connect_timeout = 0.25\n")
        done = run_cli("status", "--config", str(conf), env=cli_env(NATS_URL=url))
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    # Each server is tried twice, and the message says so with the time it took.
    assert re.search(
        rf"cannot connect to NATS at {re.escape(url)}: 2 attempts timed out after "
        r"0\.25s each \(connect_timeout\), \d+\.\ds in all$",
        line,
    ), line


@pytest.mark.parametrize(
    "command", ["server", "provision", "status", "show", "tail", "demo", "bench"]
)
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[bus.nats]\nurl = "nats://x:4222"\nstream_nmae = "typo"\n')
    extra = {"show": ["player", "x"], "tail": ["player"]}.get(command, [])
    done = run_cli(command, *extra, "--config", str(bad))
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "bad.toml" in line
    assert "stream_nmae" in line


def test_unsupported_backend_from_the_environment(conf: Path) -> None:
    done = run_cli("status", "--config", str(conf), env=cli_env(BUS_BACKEND="kafka"))
    assert done.returncode == 2
    assert "BUS_BACKEND='kafka' is not supported" in one_error_line(done.stderr)


def test_missing_config_file(tmp_path: Path) -> None:
    done = run_cli("status", "--config", str(tmp_path / "absent.toml"))
    assert done.returncode == 2
    assert "cannot read configuration" in one_error_line(done.stderr)


async def test_status_with_rich_tables(conf: Path, client: angzarr_es.Client) -> None:
    pytest.importorskip("rich")
    await client.provision()
    env = cli_env(COLUMNS="200")
    del env["ANGZARR_ES_PLAIN"]
    done = run_cli("status", "--config", str(conf), env=env)
    assert done.returncode == 0, done.stderr
    assert "┃ stream" in done.stdout  # a rich table, not the plain fallback
    assert f"{client.config.nats.stream_name} *" in done.stdout


@pytest.fixture
def plain_nats_url() -> Iterator[str]:
    """A nats-server without JetStream."""
    proc = subprocess.Popen(
        [find_nats_server(), "-a", "127.0.0.1", "-p", "-1"], stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        url = ""
        for line in proc.stderr:
            if m := re.search(r"Listening for client connections on (\S+):(\d+)", line):
                url = f"nats://127.0.0.1:{m.group(2)}"
            if "Server is ready" in line:
                break
        assert url, "nats-server did not start"
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_a_server_without_jetstream(plain_nats_url: str) -> None:
    env = cli_env(NATS_URL=plain_nats_url)
    done = run_cli("status", env=env)
    assert done.returncode == 1
    assert "! jetstream  NOT ENABLED" in done.stdout
    assert "problem: JetStream is not enabled on the server" in done.stdout
    done = run_cli("provision", env=env)
    assert done.returncode == 1
    assert "does not have JetStream enabled" in one_error_line(done.stderr)


async def test_tail_shows_the_trace_an_instrumented_append_started(
    conf: Path, client: angzarr_es.Client
) -> None:
    await client.provision()
    metrics.instrument(client, metrics.StoreMetrics(prom.CollectorRegistry()))
    tail = start_cli("tail", ">", "--count", "1", "--json", "--config", str(conf))
    try:
        stderr_lines(tail).until(lambda line: line.startswith("tailing "))
        with tracing.span() as span:
            await client.store("player").append("t", [player_pb2.PlayerRegistered()], expected=0)
        (line,) = tail.rest()
    finally:
        stop(tail)
    received = tracing.TraceContext.parse(json.loads(line)["traceparent"])
    assert received is not None
    assert received.trace_id == span.trace_id
