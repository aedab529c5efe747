"""The `angzarr-es` command line.

    angzarr-es [--config PATH] COMMAND [--config PATH] [ARGS...]

`COMMANDS` below names the subcommands (`angzarr-es --help` lists them): each
is a module of `angzarr_es._cli` with `add_arguments(parser)` and
`run(args) -> int` (`angzarr_es._cli.common.Subcommand`). Every subcommand
takes `--config PATH` (TOML, see `angzarr_es.config`), before or after its
name, and honours `NATS_URL` and `BUS_BACKEND`. Errors are one line on stderr
(control characters escaped) and a non-zero exit status: 1 for a failure, 2
for bad usage or configuration, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple

import angzarr_es
from angzarr_es._cli.common import EXIT_FAILURE, EXIT_USAGE, CommandError, Subcommand
from angzarr_es._cli.output import printable
from angzarr_es.errors import AngzarrESError, ConfigError, InvalidAggregateId, InvalidDomain

__all__ = ["COMMANDS", "Command", "main"]

PROG = "angzarr-es"
EXIT_INTERRUPTED = 130


class Command(NamedTuple):
    """One subcommand, implemented by the module `angzarr_es._cli.<name>`
    (dashes as underscores)."""

    name: str
    help: str
    """One line for `angzarr-es --help`."""
    passthrough: bool = False
    """Arguments the parser does not know go to `args.args` instead of being an error."""

    def load(self) -> Subcommand:
        """The module that implements it.

        Raises:
            TypeError: the module lacks `add_arguments` or `run`.
        """
        module = importlib.import_module(f"angzarr_es._cli.{self.name.replace('-', '_')}")
        if not isinstance(module, Subcommand):
            raise TypeError(f"{module.__name__} lacks add_arguments(parser) or run(args)")
        return module


COMMANDS: tuple[Command, ...] = (
    Command("server", "run the embedded nats-server (JetStream, data dir, monitoring port)"),
    Command("provision", "create or update the event stream (--dry-run shows the differences)"),
    Command("status", "server, JetStream, stream and consumer health (--json, --watch)"),
    Command("show", "an aggregate's history with decoded events"),
    Command("tail", "follow live events on a subject filter"),
    Command(
        "index-correlation",
        "index the correlation ids of commits angzarr's bus stored (a durable projector)",
    ),
    Command("demo", "register a player, deposit, reload, and a rejected concurrent append"),
    Command("bench", "run the benchmark suite (python -m benchmarks ARGS...)", passthrough=True),
)
"""Every subcommand, in the order `--help` lists them."""


_CONFIG_HELP = "TOML configuration file (NATS_URL and BUS_BACKEND override it)"


def _parser() -> tuple[argparse.ArgumentParser, dict[str, tuple[Command, Subcommand]]]:
    # `--config` works before the subcommand's name and after it. After it,
    # it wins; its default is SUPPRESS so that an absent one after the name
    # does not undo one before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=_CONFIG_HELP)
    parser = argparse.ArgumentParser(
        prog=PROG, description="Event store on NATS JetStream: operate, inspect, demo."
    )
    parser.add_argument("--config", metavar="PATH", help=_CONFIG_HELP)
    parser.add_argument("--version", action="version", version=f"{PROG} {angzarr_es.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands = {}
    for command in COMMANDS:
        module = command.load()
        module.add_arguments(sub.add_parser(command.name, parents=[common], help=command.help))
        commands[command.name] = (command, module)
    return parser, commands


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser, commands = _parser()
    args, extra = parser.parse_known_args(argv)
    command, module = commands[args.command]
    if command.passthrough:
        args.args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        status = module.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        # The reader went away (`angzarr-es demo | head -1`): stop quietly.
        # Python would try to flush stdout again at exit and complain, so point
        # it at devnull (the docs' "Note on SIGPIPE").
        _quiet_stdout()
        return EXIT_FAILURE
    except CommandError as exc:
        return _fail(exc, exc.status)
    except (ConfigError, InvalidDomain, InvalidAggregateId) as exc:
        return _fail(exc, EXIT_USAGE)
    except AngzarrESError as exc:
        return _fail(exc, EXIT_FAILURE)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return status


def _quiet_stdout() -> None:
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _fail(exc: BaseException, status: int) -> int:
    if os.environ.get("ANGZARR_ES_DEBUG"):
        raise exc
    first = str(exc).strip().splitlines()
    text = printable(first[0]) if first else type(exc).__name__
    print(f"{PROG}: error: {text}", file=sys.stderr)
    return status
