"""`angzarr-es demo`, the README's main job, run as a user would."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

import angzarr_es
from angzarr_es.config import Config
from tests.support import jsadmin
from tests.support.cli import cli_env, run_cli, unreachable_fails, write_config


def _check_story(out: str) -> None:
    assert "provisioned stream" in out
    assert "reloaded 4 events from a new connection" in out
    assert "balance 130.00 EUR, next sequence 4" in out
    assert out.count(": appended FundsWithdrawn as sequence 4") == 1
    assert out.count(": rejected, ConcurrencyError: expected next sequence 4") == 1


def test_demo_starts_its_own_server_when_nats_url_is_unset() -> None:
    done = run_cli("demo")
    assert done.returncode == 0, done.stderr
    assert "started nats-server at nats://127.0.0.1:" in done.stdout
    assert "stopped nats-server and removed its storage" in done.stdout
    _check_story(done.stdout)
    assert done.stderr == ""


def test_demo_without_a_server() -> None:
    unreachable_fails("demo")


@pytest.mark.parametrize("via", ["config", "NATS_URL"])
async def test_demo_uses_the_configured_server(config: Config, tmp_path: Path, via: str) -> None:
    path = write_config(tmp_path / "angzarr.toml", config)
    env = cli_env()
    if via == "NATS_URL":
        # The file names the stream; the URL in it is wrong and NATS_URL wins.
        path.write_text(path.read_text().replace(str(config.nats.url), "nats://127.0.0.1:1"))
        env = cli_env(NATS_URL=str(config.nats.url))
    done = run_cli("demo", "--config", str(path), env=env)
    try:
        assert done.returncode == 0, done.stderr
        assert f"using NATS at {config.nats.url}" in done.stdout
        assert "started nats-server" not in done.stdout
        assert f"provisioned stream {config.nats.stream_name}" in done.stdout
        _check_story(done.stdout)
    finally:
        async with await angzarr_es.connect(config=config) as client:
            await jsadmin.delete_stream(client, config.nats.stream_name)


def test_demo_reports_an_unreachable_server_in_one_line() -> None:
    done = run_cli("demo", env=cli_env(NATS_URL="nats://127.0.0.1:1"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("angzarr-es: error: cannot connect to NATS at nats://127.0.0.1:1")


def test_demo_piped_into_head_stops_quietly() -> None:
    # `angzarr-es demo | head -1`: the reader goes away after one line.
    proc = subprocess.Popen(
        [sys.executable, "-m", "angzarr_es", "demo"],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("started nats-server at nats://127.0.0.1:")
        port = int(first.split()[3].rpartition(":")[2])
        proc.stdout.close()  # the demo has more to say: its next write fails
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert stderr == ""  # no BrokenPipeError traceback, no "Exception ignored"
    assert proc.returncode == 1
    with pytest.raises(ConnectionRefusedError):  # its nats-server was stopped too
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
