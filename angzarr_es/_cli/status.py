"""`angzarr-es status`: one screen of health; exit status 1 when something needs attention."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import urllib.parse

import msgspec

import angzarr_es
from angzarr_es._cli.common import load_config, usage_error
from angzarr_es._cli.output import Bad, Output, size, when
from angzarr_es.config import redact_url
from angzarr_es.errors import StoreError, StoreTimeout, StoreUnavailable
from angzarr_es.health import Health


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    parser.add_argument(
        "--count", type=_positive_int, default=0, help="with --watch: stop after N screens"
    )
    parser.add_argument(
        "--lag-threshold", type=int, default=1000, help="consumer lag reported as a problem"
    )
    parser.add_argument(
        "--monitor-url",
        metavar="URL",
        help="nats-server monitoring endpoint, e.g. http://localhost:8222 "
        "(default: bus.nats.monitor_url or NATS_MONITOR_URL)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    monitor = args.monitor_url or os.environ.get("NATS_MONITOR_URL") or None
    if monitor is not None:
        source = "--monitor-url" if args.monitor_url else "NATS_MONITOR_URL"
        _check_url(monitor, source)
    elif config.nats.monitor_url:
        _check_url(config.nats.monitor_url, "bus.nats.monitor_url")
    if args.interval <= 0:
        raise usage_error("--interval must be > 0 seconds")
    if args.lag_threshold < 0:
        raise usage_error("--lag-threshold must be >= 0")
    return asyncio.run(_run(args, config, monitor))


def _check_url(url: str, source: str) -> None:
    """An http(s) URL with a host, or a usage error.

    Raises:
        CommandError
    """
    try:
        parts = urllib.parse.urlsplit(url)
        good = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        good = False
    if not good:
        raise usage_error(
            f"{source} {url!r} is not an http:// or https:// URL with a host, "
            "e.g. http://localhost:8222"
        )


async def _run(args: argparse.Namespace, config: angzarr_es.Config, monitor: str | None) -> int:
    out = Output()
    screens = 0
    where = ", ".join(redact_url(u) for u in config.nats.servers)
    async with contextlib.AsyncExitStack() as stack:
        client: angzarr_es.Client | None = None
        while True:
            failed: StoreError | None = None
            if client is None:
                # Not connected yet (or the server was down at start-up): the
                # screen says so, and --watch keeps trying every tick.
                try:
                    client = await stack.enter_async_context(
                        await angzarr_es.connect(config=config)
                    )
                except StoreError as exc:  # unreachable, or credentials refused
                    failed = exc
            if client is None:
                assert failed is not None
                health = _unreachable(config, monitor, failed)
            else:
                health = await client.health(monitor_url=monitor, lag_threshold=args.lag_threshold)
            if not health.server_url:
                health = msgspec.structs.replace(health, server_url=where)
            screens += 1
            if args.json:
                data = msgspec.to_builtins(health)
                data["ok"] = health.ok
                print(msgspec.json.encode(data).decode(), flush=True)
            else:
                if args.watch:
                    out.clear()
                render(out, health, args.lag_threshold)
            if not args.watch or (args.count and screens >= args.count):
                if failed is not None and not args.json and not args.watch:
                    raise failed  # also the usual one line on stderr; exit status 1
                return 0 if health.ok else 1
            await asyncio.sleep(args.interval)


def _unreachable(config: angzarr_es.Config, monitor: str | None, exc: StoreError) -> Health:
    """The screen when no connection could be made: what `Client.health()`
    reports when the server goes away under a connection."""
    return Health(
        checked_at=dt.datetime.now(dt.UTC),
        reachable=False,
        event_stream="" if config.nats.stream_layout == "per-domain" else config.nats.stream_name,
        monitor_url=config.nats.monitor_url if monitor is None else monitor,
        problems=[
            f"server unreachable: {exc}"
            if isinstance(exc, StoreUnavailable | StoreTimeout)
            else f"server refused the connection: {exc}"
        ],
    )


def render(out: Output, h: Health, lag_threshold: int) -> None:
    """The human screen."""
    version = f"  nats-server {h.server_version}" if h.server_version else ""
    out.line(
        f"angzarr-es status  {h.server_url}{version}  checked {h.checked_at:%Y-%m-%d %H:%M:%S} UTC"
    )
    if not h.reachable:
        # No connection: nothing below the server line would be true.
        out.line("server     UNREACHABLE", bad=True)
        for problem in h.problems:
            out.line(f"problem: {problem}", bad=True)
        return
    rtt = f"{h.rtt_ms:.1f} ms" if h.rtt_ms is not None else "-"
    if h.server is not None:
        s = h.server
        out.line(
            f"server     {s.server_name[:20]}  up {s.uptime}  connections {s.connections} "
            f"(total {s.total_connections})  mem {size(s.mem)}  cpu {s.cpu:.0f}%  "
            f"slow consumers {s.slow_consumers}  api rtt {rtt}",
            bad=s.slow_consumers > 0,
        )
    else:
        note = (
            f"monitoring endpoint {h.monitor_url} gave nothing, see the problems below"
            if h.monitor_url
            else "no monitoring URL: --monitor-url"
        )
        out.line(f"server     reachable, api rtt {rtt}  ({note})", dim=True)
    u = h.jetstream
    if not h.jetstream_enabled:
        out.line("jetstream  NOT ENABLED", bad=True)
    elif u is not None:
        server = ""
        if u.server_storage is not None:
            server = (
                f"  server storage {size(u.server_storage)} / {size(u.server_max_storage)}"
                f"  memory {size(u.server_memory)} / {size(u.server_max_memory)}"
            )
        out.line(
            f"jetstream  account storage {size(u.storage)} / {size(u.max_storage)}  memory "
            f"{size(u.memory)} / {size(u.max_memory)}  streams {u.streams}  consumers "
            f"{u.consumers}  api {u.api_total} calls, {u.api_errors} errors{server}"
        )
    out.line()
    rows = []
    for st in h.streams:
        name = st.name + (" *" if st.is_event_stream else "")
        if not st.present:
            rows.append([Bad(name), Bad("missing"), "-", "-", "-", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                Bad(name) if st.config_differences else name,
                str(st.replicas),
                str(st.messages),
                size(st.bytes),
                str(st.num_subjects),
                str(st.first_seq),
                str(st.last_seq),
                when(st.last_ts),
                str(st.consumer_count),
            ]
        )
    out.table(
        "streams (* = event stream)",
        ["stream", "R", "messages", "bytes", "subjects", "first seq", "last seq", "last", "cons"],
        rows,
    )
    if h.consumers:
        out.table(
            "consumers",
            ["stream/consumer", "filter", "pending", "ack pending", "redelivered", "last active"],
            [
                [
                    f"{c.stream}/{c.name}",
                    c.filter_subject or ">",
                    Bad(str(c.num_pending))
                    if c.num_pending > lag_threshold
                    else str(c.num_pending),
                    str(c.num_ack_pending),
                    Bad(str(c.num_redelivered)) if c.num_redelivered else "0",
                    when(c.last_active),
                ]
                for c in h.consumers
            ],
        )
    if h.connections:
        out.table(
            "connections (most pending bytes first)",
            ["name", "address", "client", "subs", "pending", "rtt", "idle"],
            [
                [
                    c.name or f"cid {c.cid}",
                    f"{c.ip}:{c.port}",
                    f"{c.lang} {c.version}",
                    str(c.subscriptions),
                    Bad(size(c.pending_bytes)) if c.pending_bytes else "0 B",
                    c.rtt,
                    c.idle,
                ]
                for c in h.connections
            ],
        )
    if h.ok:
        out.line("healthy")
    for problem in h.problems:
        out.line(f"problem: {problem}", bad=True)
