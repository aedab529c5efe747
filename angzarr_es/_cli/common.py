"""What the subcommands share: their interface, the error they raise, the
configuration, decoding options."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
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
        help="import MODULE (e.g. shop.orders_pb2, found from the working directory) so "
        "its event types decode; repeatable, added to the config's cli.proto_modules",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


ALWAYS_IMPORTED = (
    "angzarr_es.pb.player_pb2",
    "angzarr_es.pb.hand_pb2",
    # protobuf's well-known types: events of these types always decode.
    "google.protobuf.any_pb2",
    "google.protobuf.duration_pb2",
    "google.protobuf.empty_pb2",
    "google.protobuf.field_mask_pb2",
    "google.protobuf.struct_pb2",
    "google.protobuf.timestamp_pb2",
    "google.protobuf.wrappers_pb2",
)
"""Modules whose event types `show` and `tail` decode without being told."""


def import_protos(modules: list[str], config: Config) -> None:
    """Import the example event types, protobuf's well-known types, the
    config's `cli.proto_modules` and `modules` (`--proto-module`) so events decode.

    A module is found from the working directory, as `python -m` would, then
    on `sys.path`.

    Raises:
        CommandError: a name is not a module name, or the module cannot be
            imported (exit status 2).
    """
    for name in ALWAYS_IMPORTED:
        importlib.import_module(name)
    wanted = [(name, "cli.proto_modules") for name in config.cli.proto_modules]
    wanted += [(name, "--proto-module") for name in modules]
    if not wanted:
        return
    here = os.getcwd()
    # `python -m angzarr_es` has the working directory on sys.path, the
    # `angzarr-es` console script does not: the same search for both. Last,
    # so that a directory here cannot shadow an installed package.
    if not {"", here} & set(sys.path):
        sys.path.append(here)
        importlib.invalidate_caches()
    for name, source in wanted:
        _import_module(name, source, here)


def _import_module(name: str, source: str, here: str) -> None:
    """Raises:
    CommandError (exit status 2)"""
    problem = _not_a_module_name(name, here)
    if problem:
        raise usage_error(f"{source} {name!r}: {problem}")
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        looked = [p for p in sys.path if p not in ("", here) and os.path.isdir(p)]
        raise usage_error(
            f"{source} {name}: cannot import it: {exc}; looked in the working directory "
            f"{here} and on sys.path ({os.pathsep.join(looked)}); run from the directory "
            "its package is in, or add that directory to PYTHONPATH"
        ) from exc
    except Exception as exc:  # the module's own code failed, whatever it raised
        raise usage_error(
            f"{source} {name}: importing it failed: {type(exc).__name__}: {exc}"
        ) from exc


def _not_a_module_name(name: str, here: str) -> str:
    """Why `name` is not a dotted module name ("" if it is one), with the fix."""
    if not name.strip():
        return "an empty module name; give one such as shop.orders_pb2"
    if all(part.isidentifier() for part in name.split(".")):
        return ""
    if name.endswith(".py") or "/" in name or os.sep in name:
        try:
            parts = Path(name).resolve().relative_to(here).with_suffix("").parts
        except ValueError:  # not under the working directory
            parts = ()
        if parts and all(part.isidentifier() for part in parts):
            return f"is a file path; give its module name instead: {'.'.join(parts)}"
        return (
            "is a file path; give the module's dotted name as imported from the "
            "directory its package is in (run from there, or add it to PYTHONPATH)"
        )
    if name.startswith("."):
        return (
            "is a relative module name; give the full dotted name as imported from the "
            "working directory, such as shop" + name
        )
    return "is not a dotted module name such as shop.orders_pb2"
