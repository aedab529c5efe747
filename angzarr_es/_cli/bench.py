"""`angzarr-es bench ARGS...`: `python -m benchmarks ARGS...` in a child process."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys

from angzarr_es._cli.common import load_config, usage_error

CONFIG_ENV = "ANGZARR_ES_BENCH_CONFIG"
"""The configuration file the benchmarks connect as (`bench --config`)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Its own arguments are those the parser does not know (`passthrough`).
    parser.usage = f"{parser.prog} [--config PATH] [ARGS...]  (ARGS go to python -m benchmarks)"


def run(args: argparse.Namespace) -> int:
    config = load_config(args)  # a bad file fails here, as everywhere else
    module = os.environ.get("ANGZARR_ES_BENCH_MODULE", "benchmarks")
    if not _importable(module):
        raise usage_error(
            f"the {module} package is not importable: run this from the root of a source "
            "checkout (it ships in the sdist, not the wheel)"
        )
    extra = list(args.args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    env = dict(os.environ)
    if args.config:
        # The benchmarks read NATS_URL; hand them the configured servers, and
        # the file for how to connect to them (credentials, TLS, timeouts).
        env["NATS_URL"] = ",".join(config.nats.servers)
        env[CONFIG_ENV] = os.path.abspath(args.config)
    return subprocess.call([sys.executable, "-m", module, *extra], env=env)


def _importable(module: str) -> bool:
    """Whether `module` can be imported, looking in the working directory too.

    `python -m angzarr_es` has the working directory on sys.path, the
    `angzarr-es` console script does not: from a checkout's root, with the
    package installed from it (not editable), `benchmarks` is only there.
    The child `python -m` finds it the same way, as it runs in the same directory.
    """
    if importlib.util.find_spec(module) is not None:
        return True
    here = os.getcwd()
    package = os.path.join(here, *module.split("."))
    if not (
        os.path.isfile(os.path.join(package, "__init__.py"))
        and os.path.isfile(os.path.join(package, "run.py"))
    ):
        return False
    sys.path.insert(0, here)
    importlib.invalidate_caches()
    return importlib.util.find_spec(module) is not None
