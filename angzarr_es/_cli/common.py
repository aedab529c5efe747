"""What the subcommands share: their interface, the error they raise, the
configuration, decoding options."""

from __future__ import annotations

import argparse
import importlib
import os
from typing import Protocol, runtime_checkable

from angzarr_es.config import Config

EXIT_FAILURE = 1
EXIT_USAGE = 2


@runtime_checkable
class Subcommand(Protocol):
    """What a module of `angzarr_es._cli` provides to be a subcommand."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the subcommand's arguments (`--config` is already there)."""

    def run(self, args: argparse.Namespace) -> int:
        """Carry it out; returns the exit status.

        Raises:
            CommandError, AngzarrESError: reported by `cli.main` as one line.
        """


class CommandError(Exception):
    """A failure the command line reports as one line on stderr and `status`
    (EXIT_FAILURE, or EXIT_USAGE for bad arguments)."""

    def __init__(self, message: str, *, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


def usage_error(message: str) -> CommandError:
    """A `CommandError` for bad arguments (exit status 2)."""
    return CommandError(message, status=EXIT_USAGE)


def load_config(args: argparse.Namespace) -> Config:
    """`--config` (if given) with `NATS_URL` / `BUS_BACKEND` applied.

    Raises:
        ConfigError
    """
    return Config.load(args.config, os.environ)


def add_decoding_options(parser: argparse.ArgumentParser) -> None:
    """`--proto-module` and `--json`, for the subcommands that print events."""
    parser.add_argument(
        "--proto-module",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE so its event types decode (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def import_protos(modules: list[str]) -> None:
    """Import the example event types and any `--proto-module` so events decode.

    Raises:
        CommandError: a module cannot be imported (exit status 2).
    """
    for name in ["angzarr_es.pb.player_pb2", "angzarr_es.pb.hand_pb2", *modules]:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise usage_error(f"--proto-module {name}: cannot import: {exc}") from exc
