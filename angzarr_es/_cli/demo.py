"""`angzarr-es demo`: see `angzarr_es.demo`."""

from __future__ import annotations

import argparse
import os

from angzarr_es._cli.common import load_config
from angzarr_es.demo import run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass  # only --config


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    # A throwaway server unless the user pointed us at one.
    embedded = not os.environ.get("NATS_URL") and args.config is None
    run_demo(config, embedded=embedded, say=lambda line: print(line, flush=True))
    return 0
