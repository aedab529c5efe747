"""Running `python -m angzarr_es` as a subprocess from the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from angzarr_es.config import Config

ROOT = Path(__file__).resolve().parent.parent


def cli_env(**extra: str) -> dict[str, str]:
    """The test process's environment without NATS_URL/BUS_BACKEND, this checkout first."""
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "BUS_BACKEND")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.pop("ANGZARR_ES_DEBUG", None)
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run the command line to completion, capturing text output."""
    return subprocess.run(
        [sys.executable, "-m", "angzarr_es", *args],
        env=cli_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_config(path: Path, config: Config) -> Path:
    """A TOML file for `config`'s server, stream and subject prefix."""
    n = config.nats
    url = n.url if isinstance(n.url, str) else ",".join(n.url)
    path.write_text(
        "[bus]\n"
        'backend = "nats"\n\n'
        "[bus.nats]\n"
        f'url = "{url}"\n'
        f'stream_name = "{n.stream_name}"\n'
        f'subject_prefix = "{n.subject_prefix}"\n'
    )
    return path
