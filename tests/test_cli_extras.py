"""`angzarr-es` fixes from a user review: `status` with the server down at
start-up, `bench` from the console script, `provision --dry-run` on the side
streams, and an honest connect-timeout message."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

import angzarr_es
from angzarr_es._nats import messages as js
from angzarr_es.config import Config
from angzarr_es.embedded import EmbeddedServer
from angzarr_es.store import _snapshots
from tests.cli_helpers import ROOT, cli_env, run_cli, start_cli, stop, write_config
from tests.conftest import delete_stream
from tests.test_cli import UNREACHABLE, one_error_line

# -- status with no server at start-up ---------------------------------------------------


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


# -- bench from the console script ---------------------------------------------------


def console_script(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """What `pip install .` gives: an `angzarr-es` script (sys.path[0] is its own
    directory, not the working directory) and angzarr_es importable without
    the checkout's root, so without `benchmarks`."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "angzarr_es").symlink_to(ROOT / "angzarr_es", target_is_directory=True)
    # An editable install (`pip install -e`, as CI does) puts the checkout's
    # root on sys.path through a .pth file; take it off again, as a wheel would.
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        f"sys.path[:] = [p for p in sys.path if os.path.realpath(p) != {str(ROOT.resolve())!r}]\n"
    )
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "angzarr-es"
    script.write_text("import sys\nfrom angzarr_es.cli import main\nsys.exit(main())\n")
    env = cli_env()
    env["PYTHONPATH"] = str(site)
    env.pop("ANGZARR_ES_BENCH_MODULE", None)
    return script, env


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


# -- provision --dry-run on the snapshot and dead-letter streams -------------------------


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
            wanted = _snapshots.stream_config(n)
            drifted = msgspec.structs.replace(wanted, max_msgs_per_subject=7)
            await client._wire.js.call(f"$JS.API.STREAM.UPDATE.{wanted.name}", js.encode(drifted))
            done = run_cli("provision", "--dry-run", "--config", str(conf))
            assert done.returncode == 0, done.stderr
            assert f"snapshot stream {n.snapshot_stream} exists and would be updated" in (
                done.stdout
            )
            expected = f"  max_msgs_per_subject: 7 -> {wanted.max_msgs_per_subject}\n"
            assert expected in done.stdout
        finally:
            for stream in (n.stream_name, n.snapshot_stream, dlq):
                await delete_stream(client, stream)


# -- the connect timeout says how long it really waited --------------------------------


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
        r"each \(connect_timeout\), (\d+\.\d)s in all$",
        line,
    )
    assert m is not None, line
    assert float(m.group(1)) >= 0.5  # two attempts of 0.25 s, not one


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
