"""`angzarr-es server`: the embedded nats-server in the foreground until Ctrl-C / SIGTERM."""

from __future__ import annotations

import argparse
import re
import signal
import threading
from pathlib import Path
from types import FrameType

from angzarr_es._cli.common import load_config, usage_error
from angzarr_es.embedded import EmbeddedServer, dir_problem
from angzarr_es.errors import StoreUnavailable

_VERSION = re.compile(r"Version:\s+(\S+)")
DEFAULT_DATA_DIR = "angzarr-es-data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"JetStream storage (default: ./{DEFAULT_DATA_DIR} in the working directory)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=4222, help="client port (-1: any free port)")
    parser.add_argument(
        "--monitor-port", type=int, default=8222, help="HTTP monitoring port (-1: any free port)"
    )


def run(args: argparse.Namespace) -> int:
    load_config(args)  # validated like everywhere; the server itself needs no client config
    data_dir = Path(args.data_dir or DEFAULT_DATA_DIR).resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise usage_error(
            f"--data-dir {args.data_dir or DEFAULT_DATA_DIR}: cannot use it as the data directory: "
            f"{dir_problem(data_dir, exc)}"
        ) from exc
    # Started from this (main) thread, so the nats-server may die with us: a
    # SIGKILLed `angzarr-es server` leaves no orphan holding the data directory.
    server = EmbeddedServer(
        store_dir=data_dir,
        port=args.port,
        monitor_port=args.monitor_port,
        host=args.host,
        die_with_parent=True,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        version = next((m.group(1) for line in server.log if (m := _VERSION.search(line))), "?")
        print(
            f"nats-server {version} with JetStream is running (pid {server.proc.pid if server.proc else '?'})"
        )
        print(f"  client URL   {server.url}    (export NATS_URL={server.url})")
        if server.monitor_url:
            print(f"  monitoring   {server.monitor_url}    (/varz /connz /jsz /healthz)")
        default = "" if args.data_dir else "    (the default: --data-dir DIR to choose)"
        print(f"  data dir     {data_dir}{default}")
        print("Ctrl-C to stop", flush=True)
        while not stop.wait(0.5):
            if not server.running:
                # A Ctrl-C in a terminal reaches the child too: give our handler its turn.
                if stop.wait(1.0):
                    break
                raise StoreUnavailable(
                    f"nats-server exited unexpectedly: {server.exit_reason()} "
                    f"(its data is kept in {data_dir})"
                )
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"nats-server stopped; its data is kept in {data_dir}", flush=True)
    return 0
