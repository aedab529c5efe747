"""What the subcommands share: loading the configuration, connecting."""

from __future__ import annotations

import argparse
import importlib
import os

from angzarr_es.config import Config
from angzarr_es.errors import ConfigError


def load_config(args: argparse.Namespace) -> Config:
    """`--config` (if given) with `NATS_URL` / `BUS_BACKEND` applied.

    Raises:
        ConfigError
    """
    return Config.load(args.config, os.environ)


def import_protos(modules: list[str]) -> None:
    """Import the example event types and any `--proto-module` so events decode.

    Raises:
        ConfigError: a module cannot be imported.
    """
    for name in ["angzarr_es.pb.player_pb2", "angzarr_es.pb.hand_pb2", *modules]:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"--proto-module {name}: cannot import: {exc}") from exc
