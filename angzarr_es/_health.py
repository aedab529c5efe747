"""Collecting a `Health`: the JetStream API over the client's connection, and
nats-server's monitoring endpoints (`/varz`, `/connz`, `/jsz`) fetched with
urllib in a worker thread."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import msgspec

from angzarr_es._nats import Wire
from angzarr_es._nats import messages as m
from angzarr_es.errors import StoreError
from angzarr_es.health import (
    DEFAULT_LAG_THRESHOLD,
    ClientConnection,
    ConsumerStatus,
    Health,
    JetStreamUsage,
    ServerStats,
    StreamStatus,
)

__all__ = ["check"]

# Share of a JetStream limit in use that is reported as a problem.
USAGE_ALARM = 0.9
_ZERO_TIME = "0001-01-01T00:00:00Z"


class _Jsz(msgspec.Struct, frozen=True):
    memory: int = 0
    storage: int = 0
    config: dict[str, Any] = {}


class _Connz(msgspec.Struct, frozen=True):
    connections: list[ClientConnection] = []


_varz = msgspec.json.Decoder(ServerStats).decode
_connz = msgspec.json.Decoder(_Connz).decode
_jsz = msgspec.json.Decoder(_Jsz).decode


def _time(value: str) -> str | None:
    return None if not value or value == _ZERO_TIME else value


# -- building the summary -----------------------------------------------------------


async def check(
    wire: Wire,
    event_stream: str,
    differ: Callable[[str, dict[str, Any]], dict[str, str] | None],
    *,
    required: bool = True,
    monitor_url: str = "",
    lag_threshold: int = DEFAULT_LAG_THRESHOLD,
) -> Health:
    """Collect a `Health` over `wire`; never raises for an unhealthy system.

    `event_stream` names the event stream (a problem when missing and
    `required`); `differ(name, existing config)` names the settings a stream
    the store appends to lacks, None for a stream that is not one (the
    per-domain layout has one per domain).
    """
    problems: list[str] = []
    now = dt.datetime.now(dt.UTC)
    base: dict[str, Any] = {
        "checked_at": now,
        "server_url": wire.connected_url,
        "server_version": ".".join(map(str, wire.server_version)),
        "jetstream_enabled": wire.jetstream_enabled,
        "event_stream": event_stream,
        "monitor_url": monitor_url,
    }
    monitor = asyncio.create_task(_monitor(monitor_url)) if monitor_url else None
    reachable = True
    usage: JetStreamUsage | None = None
    streams: list[StreamStatus] = []
    consumers: list[ConsumerStatus] = []
    rtt: float | None = None
    try:
        start = time.perf_counter()
        account = await wire.js.account_info()
        rtt = (time.perf_counter() - start) * 1000
        if account.error is not None:
            problems.append(f"JetStream: {account.error.description}")
        else:
            usage = _usage(account)
            streams, consumers = await _streams(wire, event_stream, differ, required)
    except StoreError as exc:
        reachable = wire.connected
        if not reachable:
            problems.append(f"server unreachable: {exc}")
        elif not wire.jetstream_enabled:
            problems.append("JetStream is not enabled on the server (start it with -js)")
        else:
            problems.append(f"JetStream API: {exc}")
    except BaseException:
        if monitor is not None:
            monitor.cancel()
        raise
    server: ServerStats | None = None
    connections: list[ClientConnection] = []
    if monitor is not None:
        try:
            server, connections, jsz = await monitor
        except StoreError as exc:
            problems.append(f"monitoring endpoint {monitor_url}: {exc}")
        else:
            if usage is not None and jsz is not None:
                usage = msgspec.structs.replace(
                    usage,
                    server_memory=jsz.memory,
                    server_storage=jsz.storage,
                    server_max_memory=int(jsz.config.get("max_memory", -1)),
                    server_max_storage=int(jsz.config.get("max_storage", -1)),
                )
            if server.slow_consumers:
                problems.append(f"server has seen {server.slow_consumers} slow consumer(s)")
    problems.extend(_judge(event_stream, usage, streams, consumers, lag_threshold))
    return Health(
        **base,
        reachable=reachable,
        rtt_ms=rtt,
        jetstream=usage,
        streams=streams,
        consumers=consumers,
        server=server,
        connections=connections,
        problems=problems,
    )


def _usage(account: m.AccountInfo) -> JetStreamUsage:
    return JetStreamUsage(
        memory=account.memory,
        storage=account.storage,
        streams=account.streams,
        consumers=account.consumers,
        max_memory=account.limits.max_memory,
        max_storage=account.limits.max_storage,
        api_total=account.api.total,
        api_errors=account.api.errors,
    )


async def _streams(
    wire: Wire,
    event_stream: str,
    differ: Callable[[str, dict[str, Any]], dict[str, str] | None],
    required: bool,
) -> tuple[list[StreamStatus], list[ConsumerStatus]]:
    infos = await wire.js.stream_list()
    streams: list[StreamStatus] = []
    consumers: list[ConsumerStatus] = []
    for info in infos:
        config = info.config or {}
        name = str(config.get("name", ""))
        differences = differ(name, config)
        is_events = differences is not None
        st = info.state
        streams.append(
            StreamStatus(
                name=name,
                is_event_stream=is_events,
                subjects=list(config.get("subjects", [])),
                replicas=int(config.get("num_replicas", 1)),
                leader=info.cluster.leader,
                messages=st.messages,
                bytes=st.bytes,
                num_subjects=st.num_subjects,
                first_seq=st.first_seq,
                last_seq=st.last_seq,
                first_ts=_time(st.first_ts),
                last_ts=_time(st.last_ts),
                consumer_count=st.consumer_count,
                config_differences=differences or {},
            )
        )
        if st.consumer_count:
            consumers.extend(await _consumers(wire, name))
    if required and not any(s.name == event_stream for s in streams):
        streams.insert(0, StreamStatus(name=event_stream, present=False, is_event_stream=True))
    return streams, consumers


async def _consumers(wire: Wire, stream: str) -> list[ConsumerStatus]:
    infos = await wire.js.consumer_list(stream)
    return [
        ConsumerStatus(
            stream=stream,
            name=c.name,
            durable=bool(c.config.get("durable_name")),
            filter_subject=str(c.config.get("filter_subject") or "")
            or ",".join(c.config.get("filter_subjects") or []),
            num_pending=c.num_pending,
            num_ack_pending=c.num_ack_pending,
            num_redelivered=c.num_redelivered,
            num_waiting=c.num_waiting,
            delivered_stream_seq=c.delivered.stream_seq,
            ack_floor_stream_seq=c.ack_floor.stream_seq,
            last_active=_time(c.delivered.last_active),
        )
        for c in infos
    ]


def _judge(
    event_stream: str,
    usage: JetStreamUsage | None,
    streams: list[StreamStatus],
    consumers: list[ConsumerStatus],
    lag_threshold: int,
) -> list[str]:
    out: list[str] = []
    for s in streams:
        if s.is_event_stream and not s.present:
            out.append(f"stream {event_stream} does not exist (run `angzarr-es provision`)")
        if s.config_differences:
            diff = ", ".join(f"{k}: {v}" for k, v in s.config_differences.items())
            out.append(f"stream {s.name} differs from the store's settings: {diff}")
            if "allow_direct" in s.config_differences:
                out.append(
                    f"stream {s.name} does not serve Direct Get (allow_direct is off): "
                    "reads go to its leader, one request per commit"
                )
    for c in consumers:
        if c.num_pending > lag_threshold:
            out.append(f"consumer {c.stream}/{c.name} lags by {c.num_pending} messages")
        if c.num_redelivered:
            out.append(f"consumer {c.stream}/{c.name} has {c.num_redelivered} redelivered")
    if usage is not None:
        for what, used, limit in (
            ("memory", usage.memory, usage.max_memory),
            ("storage", usage.storage, usage.max_storage),
        ):
            if limit > 0 and used >= USAGE_ALARM * limit:
                out.append(f"JetStream {what} at {used / limit:.0%} of the account limit")
    return out


async def _monitor(
    url: str,
) -> tuple[ServerStats, list[ClientConnection], _Jsz | None]:
    """`/varz`, `/connz` and `/jsz` of the monitoring endpoint at `url`.

    Raises:
        StoreError: why (one problem however many of the paths fail), and
            the fix where there is one.
    """
    base = url.rstrip("/")
    # /varz alone first: an endpoint that does not answer, or is not a
    # monitoring endpoint, is reported once, the same way every time.
    varz = await asyncio.to_thread(_get, base, "/varz")
    connz, jsz = await asyncio.gather(
        asyncio.to_thread(_get, base, "/connz?sort=pending&limit=10"),
        asyncio.to_thread(_get, base, "/jsz"),
    )
    try:
        return _varz(varz), _connz(connz).connections, _jsz(jsz)
    except msgspec.DecodeError as exc:
        raise StoreError(f"not a nats-server monitoring endpoint: {exc}") from exc


CLIENT_PORT = (
    "it speaks the NATS client protocol: that is the client port, not the monitoring "
    "port (nats-server's `http` setting, e.g. http://localhost:8222)"
)


def _get(base: str, path: str, timeout: float = 2.0) -> bytes:
    """GET `base + path`.

    Raises:
        StoreError
    """
    try:
        with urllib.request.urlopen(base + path, timeout=timeout) as reply:
            data: bytes = reply.read()
            return data
    except http.client.BadStatusLine as exc:
        if str(exc).startswith("INFO "):
            raise StoreError(CLIENT_PORT) from exc
        raise StoreError(f"did not answer as an HTTP server: {exc!r}") from exc
    except http.client.HTTPException as exc:
        raise StoreError(f"did not answer as an HTTP server: {exc!r}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StoreError(f"no answer from {path.partition('?')[0]}: {reason}") from exc
