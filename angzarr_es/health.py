"""A typed health summary of the server, JetStream, the streams and their consumers.

Built from the JetStream API over the client's connection and, when a
monitoring URL is given (nats-server's `http:` port), from its `/varz`,
`/connz` and `/jsz` endpoints, fetched with urllib in a worker thread.
`Client.health()` is the entry point; `angzarr-es status` prints it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import msgspec

from angzarr_es import _jsapi as js
from angzarr_es._wire import Wire
from angzarr_es.errors import StoreError

__all__ = [
    "ClientConnection",
    "ConsumerStatus",
    "Health",
    "JetStreamUsage",
    "ServerStats",
    "StreamStatus",
    "check",
]

# A consumer this many messages behind is reported as lagging.
DEFAULT_LAG_THRESHOLD = 1000
# Share of a JetStream limit in use that is reported as a problem.
USAGE_ALARM = 0.9
_ZERO_TIME = "0001-01-01T00:00:00Z"


class ServerStats(msgspec.Struct, frozen=True, kw_only=True):
    """The server as its monitoring endpoint (`/varz`) describes it."""

    server_id: str = ""
    server_name: str = ""
    version: str = ""
    start: str = ""
    uptime: str = ""
    mem: int = 0
    cpu: float = 0.0
    cores: int = 0
    connections: int = 0
    total_connections: int = 0
    subscriptions: int = 0
    slow_consumers: int = 0
    in_msgs: int = 0
    out_msgs: int = 0
    in_bytes: int = 0
    out_bytes: int = 0
    max_payload: int = 0


class ClientConnection(msgspec.Struct, frozen=True, kw_only=True):
    """One client connection from `/connz` (the ones with most pending bytes first)."""

    cid: int = 0
    name: str = ""
    ip: str = ""
    port: int = 0
    lang: str = ""
    version: str = ""
    uptime: str = ""
    idle: str = ""
    rtt: str = ""
    pending_bytes: int = 0
    subscriptions: int = 0
    in_msgs: int = 0
    out_msgs: int = 0


class JetStreamUsage(msgspec.Struct, frozen=True, kw_only=True):
    """JetStream use and limits of the account (and of the server, from `/jsz`)."""

    memory: int = 0
    storage: int = 0
    streams: int = 0
    consumers: int = 0
    max_memory: int = -1
    """-1: unlimited."""
    max_storage: int = -1
    api_total: int = 0
    api_errors: int = 0
    server_memory: int | None = None
    """Server-wide, from `/jsz` (None without a monitoring URL)."""
    server_storage: int | None = None
    server_max_memory: int | None = None
    server_max_storage: int | None = None


class StreamStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One stream's state."""

    name: str
    present: bool = True
    is_event_stream: bool = False
    subjects: list[str] = []
    replicas: int = 1
    leader: str = ""
    messages: int = 0
    bytes: int = 0
    num_subjects: int = 0
    first_seq: int = 0
    last_seq: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    consumer_count: int = 0
    config_differences: dict[str, str] = {}
    """For the event stream: setting -> "existing -> wanted" (see `Client.plan_provision`)."""


class ConsumerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One consumer's progress."""

    stream: str
    name: str
    durable: bool = False
    filter_subject: str = ""
    num_pending: int = 0
    """Messages not yet delivered: the consumer's lag."""
    num_ack_pending: int = 0
    num_redelivered: int = 0
    num_waiting: int = 0
    delivered_stream_seq: int = 0
    ack_floor_stream_seq: int = 0
    last_active: str | None = None


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """Everything `angzarr-es status` shows; `ok` is False when `problems` is not empty."""

    checked_at: dt.datetime
    reachable: bool
    server_url: str = ""
    server_version: str = ""
    rtt_ms: float | None = None
    jetstream_enabled: bool = False
    event_stream: str = ""
    jetstream: JetStreamUsage | None = None
    streams: list[StreamStatus] = []
    consumers: list[ConsumerStatus] = []
    monitor_url: str = ""
    server: ServerStats | None = None
    connections: list[ClientConnection] = []
    problems: list[str] = []

    @property
    def ok(self) -> bool:
        """Whether nothing needs attention."""
        return not self.problems

    @property
    def stream(self) -> StreamStatus | None:
        """The event stream's status (None if it could not be read)."""
        return next((s for s in self.streams if s.is_event_stream), None)


# -- JetStream API replies ------------------------------------------------------


class _Limits(msgspec.Struct, frozen=True):
    max_memory: int = -1
    max_storage: int = -1


class _Api(msgspec.Struct, frozen=True):
    total: int = 0
    errors: int = 0


class _AccountInfo(msgspec.Struct, frozen=True):
    memory: int = 0
    storage: int = 0
    streams: int = 0
    consumers: int = 0
    limits: _Limits = _Limits()
    api: _Api = _Api()
    error: js.ApiError | None = None


class _StreamState(msgspec.Struct, frozen=True):
    messages: int = 0
    bytes: int = 0
    first_seq: int = 0
    last_seq: int = 0
    first_ts: str = ""
    last_ts: str = ""
    num_subjects: int = 0
    consumer_count: int = 0


class _Cluster(msgspec.Struct, frozen=True):
    leader: str = ""


class _StreamInfo(msgspec.Struct, frozen=True):
    config: dict[str, Any] = {}
    state: _StreamState = _StreamState()
    cluster: _Cluster = _Cluster()


class _StreamList(msgspec.Struct, frozen=True):
    total: int = 0
    streams: list[_StreamInfo] | None = None
    error: js.ApiError | None = None


class _SeqInfo(msgspec.Struct, frozen=True):
    stream_seq: int = 0
    last_active: str = ""


class _ConsumerConfig(msgspec.Struct, frozen=True):
    durable_name: str = ""
    filter_subject: str = ""
    filter_subjects: list[str] = []


class _ConsumerInfo(msgspec.Struct, frozen=True):
    stream_name: str = ""
    name: str = ""
    config: _ConsumerConfig = _ConsumerConfig()
    delivered: _SeqInfo = _SeqInfo()
    ack_floor: _SeqInfo = _SeqInfo()
    num_ack_pending: int = 0
    num_redelivered: int = 0
    num_waiting: int = 0
    num_pending: int = 0


class _ConsumerList(msgspec.Struct, frozen=True):
    total: int = 0
    consumers: list[_ConsumerInfo] | None = None
    error: js.ApiError | None = None


class _Jsz(msgspec.Struct, frozen=True):
    memory: int = 0
    storage: int = 0
    config: dict[str, Any] = {}


class _Connz(msgspec.Struct, frozen=True):
    connections: list[ClientConnection] = []


_account_info = msgspec.json.Decoder(_AccountInfo).decode
_stream_list = msgspec.json.Decoder(_StreamList).decode
_consumer_list = msgspec.json.Decoder(_ConsumerList).decode
_varz = msgspec.json.Decoder(ServerStats).decode
_connz = msgspec.json.Decoder(_Connz).decode
_jsz = msgspec.json.Decoder(_Jsz).decode


def _time(value: str) -> str | None:
    return None if not value or value == _ZERO_TIME else value


# -- building the summary -----------------------------------------------------------


async def check(
    wire: Wire,
    wanted: js.StreamConfig,
    differ: Callable[[dict[str, Any]], dict[str, str]],
    *,
    monitor_url: str = "",
    lag_threshold: int = DEFAULT_LAG_THRESHOLD,
) -> Health:
    """Collect a `Health` over `wire`; never raises for an unhealthy system.

    `wanted` is the event stream's configuration; `differ(existing config)`
    names the settings an existing event stream lacks.
    """
    problems: list[str] = []
    now = dt.datetime.now(dt.UTC)
    base: dict[str, Any] = {
        "checked_at": now,
        "server_url": wire.connected_url,
        "server_version": ".".join(map(str, wire.server_version)),
        "jetstream_enabled": wire.jetstream_enabled,
        "event_stream": wanted.name,
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
        account = _account_info(await wire.api("$JS.API.INFO", what="JetStream account info"))
        rtt = (time.perf_counter() - start) * 1000
        if account.error is not None:
            problems.append(f"JetStream: {account.error.description}")
        else:
            usage = _usage(account)
            streams, consumers = await _streams(wire, wanted, differ)
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
            problems.append(f"monitoring endpoint: {exc}")
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
    problems.extend(_judge(wanted.name, usage, streams, consumers, lag_threshold))
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


def _usage(account: _AccountInfo) -> JetStreamUsage:
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
    wire: Wire, wanted: js.StreamConfig, differ: Callable[[dict[str, Any]], dict[str, str]]
) -> tuple[list[StreamStatus], list[ConsumerStatus]]:
    infos: list[_StreamInfo] = []
    while True:  # the server answers in pages of 256
        body = b'{"offset": %d}' % len(infos)
        listing = _stream_list(await wire.api("$JS.API.STREAM.LIST", body, what="list streams"))
        if listing.error is not None:
            raise StoreError(f"list streams: {listing.error.description}")
        infos.extend(listing.streams or [])
        if not listing.streams or len(infos) >= listing.total:
            break
    streams: list[StreamStatus] = []
    consumers: list[ConsumerStatus] = []
    for info in infos:
        name = str(info.config.get("name", ""))
        is_events = name == wanted.name
        st = info.state
        streams.append(
            StreamStatus(
                name=name,
                is_event_stream=is_events,
                subjects=list(info.config.get("subjects", [])),
                replicas=int(info.config.get("num_replicas", 1)),
                leader=info.cluster.leader,
                messages=st.messages,
                bytes=st.bytes,
                num_subjects=st.num_subjects,
                first_seq=st.first_seq,
                last_seq=st.last_seq,
                first_ts=_time(st.first_ts),
                last_ts=_time(st.last_ts),
                consumer_count=st.consumer_count,
                config_differences=differ(info.config) if is_events else {},
            )
        )
        if st.consumer_count:
            consumers.extend(await _consumers(wire, name))
    if not any(s.is_event_stream for s in streams):
        streams.insert(0, StreamStatus(name=wanted.name, present=False, is_event_stream=True))
    return streams, consumers


async def _consumers(wire: Wire, stream: str) -> list[ConsumerStatus]:
    infos: list[_ConsumerInfo] = []
    while True:  # pages of 256, like streams
        body = b'{"offset": %d}' % len(infos)
        listing = _consumer_list(
            await wire.api(
                f"$JS.API.CONSUMER.LIST.{stream}", body, what=f"list consumers of {stream}"
            )
        )
        if listing.error is not None:
            raise StoreError(f"list consumers of {stream}: {listing.error.description}")
        infos.extend(listing.consumers or [])
        if not listing.consumers or len(infos) >= listing.total:
            break
    return [
        ConsumerStatus(
            stream=stream,
            name=c.name,
            durable=bool(c.config.durable_name),
            filter_subject=c.config.filter_subject or ",".join(c.config.filter_subjects),
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
    base = url.rstrip("/")
    varz, connz, jsz = await asyncio.gather(
        asyncio.to_thread(_get, base + "/varz"),
        asyncio.to_thread(_get, base + "/connz?sort=pending&limit=10"),
        asyncio.to_thread(_get, base + "/jsz"),
    )
    try:
        return _varz(varz), _connz(connz).connections, _jsz(jsz)
    except msgspec.DecodeError as exc:
        raise StoreError(f"{base}: not a nats-server monitoring endpoint: {exc}") from exc


def _get(url: str, timeout: float = 2.0) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            data: bytes = reply.read()
            return data
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StoreError(f"{url}: {reason}") from exc
