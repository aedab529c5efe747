"""`angzarr-es bench ARGS...`: `python -m benchmarks ARGS...` in a child process."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys

from angzarr_es._cli.common import load_config
from angzarr_es.errors import ConfigError


def run(args: argparse.Namespace) -> int:
    config = load_config(args)  # a bad file fails here, as everywhere else
    module = os.environ.get("ANGZARR_ES_BENCH_MODULE", "benchmarks")
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"the {module} package is not importable: run from a source checkout "
            "(it ships in the sdist, not the wheel)"
        )
    extra = list(args.args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    env = dict(os.environ)
    if args.config:
        # The benchmarks read NATS_URL; hand them the configured servers.
        env["NATS_URL"] = ",".join(config.nats.servers)
    return subprocess.call([sys.executable, "-m", module, *extra], env=env)
