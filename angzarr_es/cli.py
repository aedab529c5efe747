"""The `angzarr-es` command line.

    angzarr-es server | provision | status | show | tail | demo | bench

Every subcommand takes `--config PATH` (TOML, see `angzarr_es.config`) and
honours `NATS_URL` and `BUS_BACKEND`. Errors are one line on stderr and a
non-zero exit status: 1 for a failure, 2 for bad usage or configuration,
130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence

from angzarr_es.errors import AngzarrESError, ConfigError, InvalidAggregateId, InvalidDomain

__all__ = ["main"]

PROG = "angzarr-es"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# subcommand -> (module in angzarr_es._cli, help); imported only when used.
_COMMANDS = {
    "server": "run the embedded nats-server (JetStream, data dir, monitoring port)",
    "provision": "create or update the event stream (--dry-run shows the differences)",
    "status": "server, JetStream, stream and consumer health (--json, --watch)",
    "show": "an aggregate's history with decoded events",
    "tail": "follow live events on a subject filter",
    "demo": "register a player, deposit, reload, and a rejected concurrent append",
    "bench": "run the benchmark suite (python -m benchmarks ARGS...)",
}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help="TOML configuration file (NATS_URL and BUS_BACKEND override it)",
    )
    parser = argparse.ArgumentParser(
        prog=PROG, description="Event store on NATS JetStream: operate, inspect, demo."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cmds = {name: sub.add_parser(name, parents=[common], help=h) for name, h in _COMMANDS.items()}

    p = cmds["server"]
    p.add_argument("--data-dir", metavar="DIR", default="angzarr-es-data", help="JetStream storage")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=int, default=4222, help="client port (-1: any free port)")
    p.add_argument(
        "--monitor-port", type=int, default=8222, help="HTTP monitoring port (-1: any free port)"
    )

    p = cmds["provision"]
    p.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")

    p = cmds["status"]
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    p.add_argument(
        "--count", type=_positive_int, default=0, help="with --watch: stop after N screens"
    )
    p.add_argument(
        "--lag-threshold", type=int, default=1000, help="consumer lag reported as a problem"
    )
    p.add_argument(
        "--monitor-url",
        metavar="URL",
        help="nats-server monitoring endpoint, e.g. http://localhost:8222 "
        "(default: bus.nats.monitor_url or NATS_MONITOR_URL)",
    )

    for name in ("show", "tail"):
        cmds[name].add_argument(
            "--proto-module",
            action="append",
            default=[],
            metavar="MODULE",
            help="import MODULE so its event types decode (repeatable)",
        )
        cmds[name].add_argument("--json", action="store_true", help="one JSON object per line")
    p = cmds["show"]
    p.add_argument("domain", help="aggregate domain, e.g. player")
    p.add_argument("id", help="aggregate id")
    p.add_argument("--from", dest="from_seq", type=int, default=0, metavar="SEQ")
    p.add_argument("--to", dest="to_seq", type=int, default=None, metavar="SEQ", help="exclusive")

    p = cmds["tail"]
    p.add_argument(
        "filter", help="subject filter (angzarr.events.player.*) or a domain name (player)"
    )
    p.add_argument("--count", type=int, default=0, help="exit after N events")

    cmds[
        "bench"
    ].usage = f"{PROG} bench [--config PATH] [ARGS...]  (ARGS go to python -m benchmarks)"
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        args.args = extra  # everything else belongs to the benchmarks
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler = importlib.import_module(f"angzarr_es._cli.{args.command}")
    try:
        status: int = handler.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:
        # The reader went away (`angzarr-es demo | head -1`): stop quietly.
        # Python would try to flush stdout again at exit and complain, so point
        # it at devnull (the docs' "Note on SIGPIPE").
        _quiet_stdout()
        return EXIT_FAILURE
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
    print(f"{PROG}: error: {first[0] if first else type(exc).__name__}", file=sys.stderr)
    return status
