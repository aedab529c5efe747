"""A typed health summary of the server, JetStream, the streams and their consumers.

Built from the JetStream API over the client's connection and, when a
monitoring URL is given (nats-server's `http:` port), from its `/varz`,
`/connz` and `/jsz` endpoints, fetched with urllib in a worker thread.
`Client.health()` is the entry point; `angzarr-es status` prints it.
"""

from __future__ import annotations

import datetime as dt

import msgspec

__all__ = [
    "CacheStats",
    "ClientConnection",
    "ConsumerStatus",
    "Health",
    "JetStreamUsage",
    "ServerStats",
    "StreamStatus",
]

# A consumer this many messages behind is reported as lagging.
DEFAULT_LAG_THRESHOLD = 1000


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


class CacheStats(msgspec.Struct, frozen=True, kw_only=True):
    """This client's hot-aggregate cache (`[bus.nats] cache_bytes`), since it connected."""

    max_bytes: int = 0
    """The bound (0: the cache is off)."""
    bytes: int = 0
    """What the entries hold, as the cache estimates it."""
    entries: int = 0
    events: int = 0
    hits: int = 0
    """Loads and iterations served from an entry: one request."""
    misses: int = 0
    """Loads and iterations of an aggregate without an entry: the whole history read."""
    fallbacks: int = 0
    """Entries found stale (their last commit gone: a purge, a deleted edition,
    a re-created stream) and dropped: the whole history read."""
    evictions: int = 0
    """Entries dropped to stay within `max_bytes`."""


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """Everything `angzarr-es status` shows; `ok` is False when `problems` is not empty."""

    checked_at: dt.datetime
    reachable: bool
    server_url: str = ""
    server_version: str = ""
    rtt_ms: float | None = None
    jetstream_enabled: bool = False
    event_stream: str = ""
    """The single layout's event stream; "" in per-domain layout, where every
    domain stream is an event stream (`StreamStatus.is_event_stream`)."""
    jetstream: JetStreamUsage | None = None
    streams: list[StreamStatus] = []
    consumers: list[ConsumerStatus] = []
    monitor_url: str = ""
    server: ServerStats | None = None
    connections: list[ClientConnection] = []
    cache: CacheStats | None = None
    """This client's hot-aggregate cache (None: not collected)."""
    problems: list[str] = []

    @property
    def ok(self) -> bool:
        """Whether nothing needs attention."""
        return not self.problems

    @property
    def stream(self) -> StreamStatus | None:
        """The event stream's status (None if it could not be read)."""
        return next((s for s in self.streams if s.is_event_stream), None)
