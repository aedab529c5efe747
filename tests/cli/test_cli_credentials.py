"""Connection settings that cannot work, as the command line reports them: nkey
and .creds authentication without the nkeys package or with a bad seed or
file (exit status 2, before any connect), and a server URL that is the
monitoring port (exit status 1, naming it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from angzarr_es.embedded import EmbeddedServer
from tests.support.authkit import Operator, user_key
from tests.support.cli import UNREACHABLE, cli_env, one_error_line, run_cli


def settings(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "auth.toml"
    path.write_text(f"[bus.nats]\n{text}\n")
    return path


@pytest.fixture
def creds(tmp_path: Path) -> Path:
    return Operator().creds(tmp_path / "app.creds")


@pytest.fixture
def without_nkeys(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import nkeys` fails, as where it is not installed."""
    fake = tmp_path / "no-nkeys" / "nkeys"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'nkeys'\", name='nkeys')\n"
    )
    env = cli_env(NATS_URL=UNREACHABLE)
    env["PYTHONPATH"] = f"{fake.parent}:{env['PYTHONPATH']}"
    return env


@pytest.mark.parametrize("key", ["nkey_seed", "credentials"])
def test_nkey_auth_without_the_nkeys_package_names_the_extra(
    tmp_path: Path, creds: Path, without_nkeys: dict[str, str], key: str
) -> None:
    value = user_key().seed.decode() if key == "nkey_seed" else str(creds)
    conf = settings(tmp_path, f'{key} = "{value}"')
    done = run_cli("status", "--config", str(conf), env=without_nkeys)
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert f"bus.nats.{key} needs the nkeys package" in line
    assert line.endswith("pip install 'angzarr-es[nkeys]'")


@pytest.mark.parametrize(
    "seed",
    ["SUnotaseed", "not base32 at all!", user_key().public],  # a public key is not a seed
    ids=["not-a-seed", "not-base32", "a-public-key"],  # the same ids in every process
)
def test_a_bad_nkey_seed_is_one_line_that_does_not_show_it(tmp_path: Path, seed: str) -> None:
    conf = settings(tmp_path, f'nkey_seed = "{seed}"')
    done = run_cli("status", "--config", str(conf), env=cli_env(NATS_URL=UNREACHABLE))
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "bus.nats.nkey_seed is not a valid nkey seed" in line
    assert "starting with SU" in line
    assert seed not in line


def test_a_creds_file_that_is_missing_or_not_one(tmp_path: Path, creds: Path) -> None:
    env = cli_env(NATS_URL=UNREACHABLE)
    missing = tmp_path / "missing.creds"
    done = run_cli(
        "status", "--config", str(settings(tmp_path, f'credentials = "{missing}"')), env=env
    )
    assert done.returncode == 2
    assert f"bus.nats.credentials: cannot read '{missing}'" in one_error_line(done.stderr)

    junk = tmp_path / "junk.creds"
    junk.write_text("hello\n")
    done = run_cli(
        "status", "--config", str(settings(tmp_path, f'credentials = "{junk}"')), env=env
    )
    assert done.returncode == 2
    assert f"'{junk}' is not a NATS .creds file" in one_error_line(done.stderr)

    lines = creds.read_text().splitlines()
    seed_at = lines.index("-----BEGIN USER NKEY SEED-----") + 1
    lines[seed_at] = "SUnotaseed"
    creds.write_text("\n".join(lines) + "\n")
    done = run_cli(
        "status", "--config", str(settings(tmp_path, f'credentials = "{creds}"')), env=env
    )
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert f"the seed in '{creds}' is not a valid nkey seed" in line


@pytest.fixture
def monitoring_url() -> Iterator[str]:
    with EmbeddedServer() as server:
        yield server.monitor_url


def test_a_server_url_at_the_monitoring_port_says_so(tmp_path: Path, monitoring_url: str) -> None:
    url = monitoring_url.replace("http://", "nats://")
    conf = settings(tmp_path, "connect_timeout = 0.5")
    done = run_cli("status", "--config", str(conf), env=cli_env(NATS_URL=url))
    assert done.returncode == 1
    line = one_error_line(done.stderr)
    hostport = url.removeprefix("nats://")
    assert line.endswith(
        f"cannot connect to NATS at {url}: {hostport} answers HTTP: that is nats-server's "
        "monitoring port, not its client port (4222 unless the server's `port` says otherwise)"
    )
