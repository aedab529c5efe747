"""`angzarr-es` subcommands as subprocesses against a real server: output and
exit codes of server, show, tail and bench, and the errors every subcommand
shares (`provision` and `status` have files of their own)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import prometheus_client as prom
import pytest

import angzarr_es
from angzarr_es import metrics, tracing
from angzarr_es.cli import COMMANDS, Command
from angzarr_es.config import Config
from angzarr_es.embedded import EmbeddedServer, find_nats_server
from angzarr_es.pb import player_pb2
from tests.support import jsadmin
from tests.support.cli import (
    ROOT,
    UNREACHABLE,
    add_nats_settings,
    cli_env,
    console_script,
    one_error_line,
    required_arguments,
    run_cli,
    start_cli,
    stderr_lines,
    stop,
    unreachable_fails,
)


def test_help_lists_every_subcommand() -> None:
    done = run_cli("--help", env=cli_env(COLUMNS="200"))  # no help wrapped
    assert done.returncode == 0
    for command in COMMANDS:
        assert re.search(rf"^ +{command.name}\s+{re.escape(command.help)}$", done.stdout, re.M)


def test_version() -> None:
    done = run_cli("--version")
    assert done.returncode == 0
    assert done.stdout == f"angzarr-es {angzarr_es.__version__}\n"


@pytest.mark.parametrize("where", ["before", "after", "both"])
def test_config_goes_before_or_after_the_subcommand(tmp_path: Path, where: str) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[bus.nats]\nstream_name = "from-the-file"\n')
    other = tmp_path / "other.toml"
    other.write_text('[bus.nats]\nstream_name = "not-this-one"\n')
    args = {
        "before": ["--config", str(good), "provision", "--dry-run"],
        "after": ["provision", "--dry-run", "--config", str(good)],
        # The one after the subcommand wins, as it is the more specific.
        "both": ["--config", str(other), "provision", "--dry-run", "--config", str(good)],
    }[where]
    done = run_cli(*args, env=cli_env(NATS_URL=UNREACHABLE))
    assert done.returncode == 1  # read the file, then found no server
    assert "invalid choice" not in done.stderr
    assert f"cannot connect to NATS at {UNREACHABLE}" in one_error_line(done.stderr)
    bad = tmp_path / "bad.toml"
    bad.write_text("[bus.nats]\nstream_nmae = 'typo'\n")
    done = run_cli("--config", str(bad), "status")
    assert done.returncode == 2
    assert "stream_nmae" in one_error_line(done.stderr)


def test_the_docs_describe_every_subcommand() -> None:
    docs = (ROOT / "docs" / "cli.md").read_text()
    for command in COMMANDS:
        assert re.search(rf"^\| `angzarr-es {command.name}[ `]", docs, re.M), command.name


# -- server ----------------------------------------------------------------------------


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
        assert rest[-1] == f"nats-server stopped; its data is kept in {data}"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the nats-server child is gone too
    finally:
        stop(server)


def test_server_says_where_its_default_data_dir_is_and_why_the_server_died(
    tmp_path: Path,
) -> None:
    # No --data-dir: ./angzarr-es-data, said plainly.
    server = start_cli("server", "--port", "-1", "--monitor-port", "-1", cwd=tmp_path)
    try:
        head = server.until(lambda line: "nats-server" in line and "running" in line)
        data = server.until(lambda line: "data dir" in line)
        server.until(lambda line: line.startswith("Ctrl-C"))
        where = tmp_path / "angzarr-es-data"
        assert data == f"  data dir     {where}    (the default: --data-dir DIR to choose)"
        assert (where / "jetstream").is_dir()
        # nats-server dies under it: the reason is how it died, not its last log line.
        os.kill(int(head.rpartition("pid ")[2].rstrip(")")), signal.SIGKILL)
        server.rest()
        assert server.proc.returncode == 1
        assert server.proc.stderr is not None
        line = one_error_line(server.proc.stderr.read())
        assert line == (
            "angzarr-es: error: nats-server exited unexpectedly: killed by SIGKILL "
            f"(its data is kept in {where})"
        )
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


# -- show ------------------------------------------------------------------------------


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
    unreachable_fails("show", "player", "x")


# -- tail ------------------------------------------------------------------------------


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
        # Flushed: `until` below blocks this event loop.
        await jsadmin.publish_unacked(client, junk, b"\xff\xff")  # not a commit
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


@pytest.fixture
def core_conf(conf: Path) -> Path:
    """`conf` with the bus in core mode."""
    return add_nats_settings(conf, "jetstream = false")


async def test_tail_in_core_mode_sees_every_publish_with_its_headers(
    core_conf: Path, client: angzarr_es.Client, config: Config
) -> None:
    await client.provision()
    metrics.instrument(client, metrics.StoreMetrics(prom.CollectorRegistry()))  # traceparent
    tail = start_cli("tail", "player", "--count", "2", "--json", "--config", str(core_conf))
    notices = stderr_lines(tail)
    try:
        notices.until(lambda line: line.startswith("tailing "))
        junk = f"{config.nats.subject_prefix}.events.player.junk"
        await jsadmin.publish_unacked(client, junk, b"\xff\xff")  # not a commit
        assert junk in notices.until(lambda line: line.startswith("skipped a message"))
        with tracing.span() as span:
            await client.store("player").append(
                "p1",
                [player_pb2.PlayerRegistered(name="Bob"), player_pb2.FundsDeposited()],
                expected=0,
            )
        lines = tail.rest()
        assert tail.proc.returncode == 0
    finally:
        stop(tail)
    rows = [json.loads(line) for line in lines]
    assert [(r["id"], r["sequence"]) for r in rows] == [("p1", 0), ("p1", 1)]
    (trace,) = {r["traceparent"] for r in rows}  # one commit
    received = tracing.TraceContext.parse(trace)
    assert received is not None
    assert received.trace_id == span.trace_id


def test_tail_without_a_server() -> None:
    unreachable_fails("tail", "player")


# -- bench -----------------------------------------------------------------------------


def fake_benchmarks(tmp_path: Path, main: str) -> dict[str, str]:
    """A `benchmarks` package in `tmp_path` whose `__main__` is `main`; the
    CLI's environment that finds it (run from `tmp_path`: `python -m` puts the
    working directory first on sys.path)."""
    pkg = tmp_path / "benchmarks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(main)
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    return env


def test_bench_passes_arguments_and_exit_status_through(tmp_path: Path) -> None:
    env = fake_benchmarks(
        tmp_path,
        "import os, sys\nprint('args', sys.argv[1:], os.environ.get('NATS_URL'))\nsys.exit(3)\n",
    )
    env["NATS_URL"] = "nats://example:4222"
    done = run_cli("bench", "--quick", "-n", "5", env=env, cwd=tmp_path)
    assert done.returncode == 3
    assert "args ['--quick', '-n', '5'] nats://example:4222" in done.stdout


def test_bench_hands_the_config_file_to_the_benchmarks(tmp_path: Path) -> None:
    env = fake_benchmarks(
        tmp_path,
        "import os\nprint(os.environ['NATS_URL'], os.environ['ANGZARR_ES_BENCH_CONFIG'])\n",
    )
    (tmp_path / "bench.toml").write_text('[bus.nats]\nurl = "nats://a:4222,nats://b:4222"\n')
    done = run_cli("bench", "--config", "bench.toml", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["nats://a:4222,nats://b:4222", str(tmp_path / "bench.toml")]


def test_bench_without_the_package_says_so() -> None:
    done = run_cli("bench", env=cli_env(ANGZARR_ES_BENCH_MODULE="no_such_benchmarks"))
    assert done.returncode == 2
    assert "no_such_benchmarks package is not importable" in one_error_line(done.stderr)


def test_bench_console_script_finds_benchmarks_in_the_working_directory(tmp_path: Path) -> None:
    script, env = console_script(tmp_path)
    # `--` hands `--help` to the benchmarks: it gets past the import, runs nothing.
    args = [sys.executable, str(script), "bench", "--", "--help"]
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m benchmarks")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(args, env=env, cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "the benchmarks package is not importable" in line
    assert "run this from the root of a source checkout" in line


# -- errors common to every subcommand -------------------------------------------------


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
        r"0\.25s each \(connect_timeout\), \d+\.\ds in all \(is nats-server running there\? ",
        line,
    ), line


def test_a_connect_timeout_names_the_attempts_and_the_time_taken(tmp_path: Path) -> None:
    # A socket that listens and never accepts: TCP connects, the INFO never comes.
    conf = tmp_path / "angzarr.toml"
    conf.write_text("[bus.nats]\nconnect_timeout = 0.25\n")
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"nats://127.0.0.1:{silent.getsockname()[1]}"
        done = run_cli("provision", "--config", str(conf), env=cli_env(NATS_URL=url))
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    m = re.search(
        rf"cannot connect to NATS at {re.escape(url)}: 2 attempts timed out after 0\.25s "
        r"each \(connect_timeout\), (\d+\.\d)s in all \(is nats-server running there\? ",
        line,
    )
    assert m is not None, line
    assert float(m.group(1)) >= 0.5  # two attempts of 0.25 s, not one


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, command: Command) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[bus.nats]\nurl = "nats://x:4222"\nstream_nmae = "typo"\n')
    done = run_cli(command.name, *required_arguments(command), "--config", str(bad))
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


def test_a_bad_domain_name_is_a_usage_error_before_any_connection() -> None:
    done = run_cli("provision", "--domain", "a b", env=cli_env(NATS_URL=UNREACHABLE))
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert line.startswith("angzarr-es: error: --domain: domain 'a b' must be")
    assert "cannot connect" not in line


def test_no_server_names_where_to_look() -> None:
    done = run_cli("status", "--json", env=cli_env(NATS_URL=UNREACHABLE))
    assert done.returncode == 1
    done = run_cli("show", "player", "x", env=cli_env(NATS_URL=UNREACHABLE))
    assert done.returncode == 1
    assert "`angzarr-es server` starts one" in one_error_line(done.stderr)
