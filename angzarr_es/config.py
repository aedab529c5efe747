"""Configuration in the angzarr docs' layout, read from TOML and the environment.

    [bus]
    backend = "nats"

    [bus.nats]
    url = "nats://localhost:4222"     # or ["nats://a:4222", "nats://b:4222"], or "a,b"
    jetstream = true
    stream_name = "angzarr-events"
    stream_layout = "single"          # or "per-domain": angzarr's bus layout, <PREFIX>_<DOMAIN>
    dlq_stream = "angzarr-dlq"        # dead letters, subjects <prefix>.dlq.<domain>

    [[bus.nats.consumers]]            # durable projectors made by `client.bus.provision()`
    name = "player-projector"
    filter = "angzarr.events.player.*"

    [cli]
    proto_modules = ["shop.orders_pb2"]   # imported by `angzarr-es show` / `tail`

Durations (`max_age`, `duplicate_window`, the timeouts,
`deposed_leader_wait`, `stream_discovery_interval`, a consumer's `ack_wait`
and `backoff`) are seconds, or in the file a string such as
`"7d"`, `"12h"`, `"1h30m"`, `"90s"` or `"500ms"`. `NATS_URL` and
`BUS_BACKEND` override the file.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from angzarr_es._durations import DURATIONS, EXAMPLES, is_duration_key, read_durations
from angzarr_es.errors import ConfigError

__all__ = ["BusConfig", "CliConfig", "Config", "ConsumerSpec", "NatsConfig"]

log = logging.getLogger("angzarr_es")

DEFAULT_URL = "nats://localhost:4222"
SUPPORTED_BACKENDS = ("nats",)


class ConsumerSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One `[[bus.nats.consumers]]` entry: a durable projector's consumer."""

    name: str
    filter: str
    max_deliver: int = 5
    # Seconds the server waits for an ack before redelivering.
    ack_wait: float = 30.0
    # Seconds before redelivery after the handler's 1st, 2nd, ... failure (last repeats).
    backoff: list[float] = msgspec.field(default_factory=lambda: [1.0, 5.0, 15.0, 30.0])
    max_ack_pending: int = 1000


class NatsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The `[bus.nats]` table."""

    url: str | list[str] = DEFAULT_URL
    jetstream: bool = True
    stream_name: str = "angzarr-events"
    # "single": every domain in `stream_name`; "per-domain": angzarr's bus
    # layout, domain D in stream <PREFIX>_<D> (docs/operations.md, "Stream layouts").
    stream_layout: Literal["single", "per-domain"] = "single"
    subject_prefix: str = "angzarr"
    # Snapshots' own stream; "" derives it from stream_name ("-events" -> "-snapshots").
    snapshot_stream_name: str = ""
    # Older snapshots kept per aggregate besides the latest.
    snapshot_history: int = 0
    replicas: int = 1
    # Seconds; 0 keeps events forever. Anything else deletes events.
    max_age: float = 0.0
    duplicate_window: float = 120.0
    request_timeout: float = 2.0
    connect_timeout: float = 2.0
    # Attempts for one append when acks are lost (same Nats-Msg-Id each time).
    append_attempts: int = 3
    # Seconds an append re-checks a refusal that proves nothing (a deposed
    # stream leader's, during a leader change) before its outcome is reported
    # unknown (StoreTimeout), or with an idempotency key a read behind
    # `expected` before it is a conflict; 0: at once (docs/reliability.md).
    deposed_leader_wait: float = 2.0
    # Per-domain layout: seconds between two listings of the domain streams by
    # a projector or subscription spanning them (a new domain's is found so).
    stream_discovery_interval: float = 5.0
    # Aggregate positions kept (entries).
    cache_size: int = 100_000
    # Bytes of decoded histories kept for loads in one request (0: off);
    # docs/operations.md, "The hot-aggregate cache".
    cache_bytes: int = 64 * 1024 * 1024
    replay: Literal["direct", "consumer"] = "direct"
    # What precedes an event's full protobuf name in its Any's type URL when
    # this library writes it (what Any.Pack writes, and what angzarr's clients
    # compare against); "/" keeps the form this library wrote before (issue 16).
    # Reading accepts any prefix.
    type_url_prefix: str = "type.googleapis.com/"
    # Before a client's first append: an event stream whose settings can delete
    # events (max_age, max_msgs, ..., discard old) is refused with
    # StreamConfigError ("refuse"), or appended to after a warning ("warn").
    stream_check: Literal["refuse", "warn"] = "refuse"
    credentials: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey_seed: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    name: str = "angzarr-es"
    # nats-server's HTTP monitoring endpoint (e.g. http://localhost:8222), for health().
    monitor_url: str = ""
    dlq_stream: str = "angzarr-dlq"
    consumers: list[ConsumerSpec] = msgspec.field(default_factory=list)

    @property
    def snapshot_stream(self) -> str:
        """The snapshot stream's name (default `angzarr-snapshots`)."""
        if self.snapshot_stream_name:
            return self.snapshot_stream_name
        base = self.stream_name.removesuffix("-events")
        return base + "-snapshots"

    @property
    def correlation_stream(self) -> str:
        """The correlation index's stream: the event stream in single layout,
        `<stream_name minus "-events">-correlation` in per-domain layout."""
        if self.stream_layout == "single":
            return self.stream_name
        return self.stream_name.removesuffix("-events") + "-correlation"

    @property
    def servers(self) -> list[str]:
        """The server URLs as a list."""
        raw = [self.url] if isinstance(self.url, str) else list(self.url)
        return [u.strip() for part in raw for u in part.split(",") if u.strip()]


class BusConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The `[bus]` table."""

    backend: str = "nats"
    nats: NatsConfig = msgspec.field(default_factory=NatsConfig)


class CliConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The `[cli]` table: settings of the `angzarr-es` command line only."""

    # Modules imported so that `show` and `tail` decode their event types
    # (as if each were given with --proto-module).
    proto_modules: list[str] = msgspec.field(default_factory=list)


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The whole configuration file; every field has a working default."""

    bus: BusConfig = msgspec.field(default_factory=BusConfig)
    cli: CliConfig = msgspec.field(default_factory=CliConfig)

    @property
    def nats(self) -> NatsConfig:
        """Shortcut for `config.bus.nats`."""
        return self.bus.nats

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
    ) -> Config:
        """Read `path` (if given), then apply `NATS_URL` and `BUS_BACKEND` from `env`.

        Raises:
            ConfigError: unreadable file, unknown key, wrong type, bad value or
                unsupported backend; the message names the key and the file.
        """
        env = os.environ if env is None else env
        where = str(path) if path is not None else "<defaults>"
        if path is None:
            config = cls()
        else:
            try:
                raw = Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(f"{where}: cannot read configuration: {exc}") from exc
            try:
                table = msgspec.toml.decode(raw, type=dict[str, Any])
            except msgspec.DecodeError as exc:
                raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
            read_durations(table, where)
            try:
                config = msgspec.convert(table, type=cls)
            except msgspec.ValidationError as exc:
                raise ConfigError(f"{where}: {_explained(str(exc))}") from exc
        config = config.with_env(env)
        backend = env.get("BUS_BACKEND", "").strip().lower()
        if backend and backend not in SUPPORTED_BACKENDS:
            raise ConfigError(
                f"BUS_BACKEND={env['BUS_BACKEND']!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_BACKENDS)})"
            )
        if env.get("NATS_URL"):
            _check_urls(config.nats.servers, "NATS_URL")
        # No warnings yet: `connect()` validates again and gives them, once.
        config._check(where)
        return config

    def with_env(self, env: Mapping[str, str]) -> Config:
        """Return a copy with `NATS_URL` and `BUS_BACKEND` applied."""
        nats = self.bus.nats
        backend = self.bus.backend
        if env.get("NATS_URL"):
            nats = msgspec.structs.replace(nats, url=env["NATS_URL"])
        if env.get("BUS_BACKEND"):
            backend = env["BUS_BACKEND"].strip().lower()
        return msgspec.structs.replace(self, bus=BusConfig(backend=backend, nats=nats))

    def with_url(self, url: str | list[str]) -> Config:
        """Return a copy connecting to `url`."""
        nats = msgspec.structs.replace(self.bus.nats, url=url)
        return msgspec.structs.replace(self, bus=msgspec.structs.replace(self.bus, nats=nats))

    def validate(self, where: str = "<config>") -> None:
        """Check values msgspec's types cannot express, and warn (on the
        `angzarr_es` logger) about settings that delete events.

        Raises:
            ConfigError: naming the offending key.
        """
        self._check(where)
        if self.bus.nats.max_age > 0:
            log.warning(
                "bus.nats.max_age = %ss: JetStream will DELETE events older than that",
                f"{self.bus.nats.max_age:g}",
            )

    def _check(self, where: str) -> None:
        n = self.bus.nats
        if self.bus.backend not in SUPPORTED_BACKENDS:
            raise ConfigError(
                f"{where}: bus.backend = {self.bus.backend!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_BACKENDS)})"
            )
        _check_urls(n.servers, f"{where}: bus.nats.url")
        checks: list[tuple[bool, str]] = [
            (bool(n.servers), "bus.nats.url is empty"),
            (n.replicas in (1, 3, 5), "bus.nats.replicas must be 1, 3 or 5"),
            (n.max_age >= 0, "bus.nats.max_age must be >= 0 seconds"),
            (n.duplicate_window > 0, "bus.nats.duplicate_window must be > 0 seconds"),
            (n.request_timeout > 0, "bus.nats.request_timeout must be > 0 seconds"),
            (n.connect_timeout > 0, "bus.nats.connect_timeout must be > 0 seconds"),
            (n.append_attempts >= 1, "bus.nats.append_attempts must be >= 1"),
            (n.deposed_leader_wait >= 0, "bus.nats.deposed_leader_wait must be >= 0 seconds"),
            (
                n.stream_discovery_interval > 0,
                "bus.nats.stream_discovery_interval must be > 0 seconds",
            ),
            (n.cache_size >= 0, "bus.nats.cache_size must be >= 0"),
            (n.cache_bytes >= 0, "bus.nats.cache_bytes must be >= 0 (0 turns the cache off)"),
            (_token_ok(n.stream_name), "bus.nats.stream_name must be one token of [A-Za-z0-9_-]"),
            (
                not n.snapshot_stream_name or _token_ok(n.snapshot_stream_name),
                "bus.nats.snapshot_stream_name must be one token of [A-Za-z0-9_-]",
            ),
            (n.snapshot_history >= 0, "bus.nats.snapshot_history must be >= 0"),
            (
                _type_url_prefix_ok(n.type_url_prefix),
                "bus.nats.type_url_prefix must end with '/' and hold no blanks "
                '(e.g. "type.googleapis.com/", the default, or "/")',
            ),
            (_prefix_ok(n.subject_prefix), "bus.nats.subject_prefix must be dot-separated tokens"),
            (_token_ok(n.dlq_stream), "bus.nats.dlq_stream must be one token of [A-Za-z0-9_-]"),
            (
                len({n.stream_name, n.snapshot_stream, n.dlq_stream}) == 3,
                "bus.nats.stream_name, the snapshot stream "
                f"({n.snapshot_stream}) and dlq_stream must be three different streams",
            ),
        ]
        if n.stream_layout == "per-domain":
            checks += _per_domain_checks(n)
        for c in n.consumers:
            checks += [
                (_token_ok(c.name), f"bus.nats.consumers: name {c.name!r} must be [A-Za-z0-9_-]"),
                (c.max_deliver >= 1, f"bus.nats.consumers[{c.name}].max_deliver must be >= 1"),
                (c.ack_wait > 0, f"bus.nats.consumers[{c.name}].ack_wait must be > 0"),
                (all(b >= 0 for b in c.backoff), f"bus.nats.consumers[{c.name}].backoff < 0"),
            ]
        for key in DURATIONS:
            checks.append(
                (math.isfinite(getattr(n, key)), f"bus.nats.{key} must be a finite number")
            )
        for c in n.consumers:
            checks.append(
                (
                    all(math.isfinite(x) for x in (c.ack_wait, *c.backoff)),
                    f"bus.nats.consumers[{c.name}]: ack_wait and backoff must be finite",
                )
            )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"{where}: {message}")


def _per_domain_checks(n: NatsConfig) -> list[tuple[bool, str]]:
    """Per-domain layout: the prefix names streams (`<PREFIX>_<DOMAIN>`, no
    dots allowed), and the project's other streams must never be taken for a
    domain's."""
    domains = n.subject_prefix.upper() + "_"
    checks = [
        (
            "." not in n.subject_prefix,
            f"bus.nats.subject_prefix = {n.subject_prefix!r}: the per-domain layout names "
            "streams <PREFIX>_<DOMAIN>, so the prefix must be one token (no dots)",
        )
    ]
    for key, name in (
        ("the snapshot stream", n.snapshot_stream),
        ("the correlation stream", n.correlation_stream),
        ("bus.nats.dlq_stream", n.dlq_stream),
    ):
        checks.append(
            (
                not name.startswith(domains),
                f"{key} ({name}) starts with {domains}, the names of the per-domain "
                "layout's domain streams: rename it (bus.nats.stream_name, "
                "snapshot_stream_name, dlq_stream)",
            )
        )
    checks.append(
        (
            n.correlation_stream not in (n.snapshot_stream, n.dlq_stream),
            f"the correlation stream ({n.correlation_stream}) must differ from the snapshot "
            "and dead-letter streams",
        )
    )
    return checks


URL_SCHEMES = ("nats", "tls", "ws", "wss")


def _check_urls(urls: list[str], source: str) -> None:
    """Refuse a server URL nats-py would misread (an `http://` URL became a
    DNS error naming no URL).

    Raises:
        ConfigError: naming `source` and the URL.
    """
    for url in urls:
        scheme, sep, rest = url.partition("://")
        if not sep:
            scheme, rest = "nats", url
        hostport = rest.partition("/")[0].rpartition("@")[2]
        host, colon, port = hostport.rpartition(":")
        if not colon or hostport.endswith("]"):
            host, port = hostport, ""
        problem = ""
        if scheme not in URL_SCHEMES:
            # nats-py reads an upper-case scheme as a host name (and TLS:// drops TLS).
            problem = f"scheme {scheme!r} is not one of {', '.join(URL_SCHEMES)} (lower case)"
        elif "@" in rest and any(c in rest.rpartition("@")[0] for c in "?#"):
            problem = "a '?' or '#' in the user or password must be percent-encoded"
        elif not host:
            problem = "no host"
        elif colon and port and not (port.isdigit() and 0 < int(port) < 65536):
            problem = f"port {port!r} is not a number from 1 to 65535"
        if problem:
            raise ConfigError(f"{source}: {url!r}: {problem}")
    kinds = {u.partition("://")[0] in ("ws", "wss") for u in urls if "://" in u}
    if len(kinds) > 1:
        raise ConfigError(f"{source}: websocket (ws, wss) and other URLs cannot be mixed")


# A PostgreSQL `password` parameter: in a URL's query (percent-encoded, so it
# ends at `&` or `#`), or in a key=value DSN (quoted, or up to white space).
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*")
_DSN_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*(?:'|$)|\S+)")


def redact_url(url: str) -> str:
    """`url` fit to print: a user name is kept, a password or token is not
    (`nats://ann:***@host:4222`, `nats://***@host:4222`), nor a PostgreSQL DSN's
    `password` parameter (`postgresql://db/x?password=***`, `host=db password=***`)."""
    scheme, sep, rest = url.partition("://")
    if sep:
        rest = _QUERY_PASSWORD.sub(r"\1***", rest)
    else:
        scheme, rest = "", _DSN_PASSWORD.sub(r"\1***", url)
    head, slash, path = rest.partition("/")
    userinfo, at, hostport = head.rpartition("@")
    if not at:
        return f"{scheme}{sep}{rest}"
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{scheme}{sep}{shown}@{hostport}{slash}{path}"


def _token_ok(name: str) -> bool:
    return bool(name) and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)


def _type_url_prefix_ok(prefix: str) -> bool:
    return prefix.endswith("/") and prefix.isascii() and prefix.isprintable() and " " not in prefix


def _prefix_ok(prefix: str) -> bool:
    return all(_token_ok(tok) for tok in prefix.split("."))


def _explained(message: str) -> str:
    """msgspec's "... - at `$.bus.nats.x`", led by the key, with the valid
    values of a choice and the unit of a duration."""
    text, sep, at = message.rpartition(" - at `$.")
    if not sep:
        return message
    key = at.rstrip("`")
    field = _field_type(key)
    if isinstance(field, msgspec.inspect.LiteralType):
        text += f" (valid: {', '.join(repr(v) for v in field.values)})"
    elif is_duration_key(key):
        text += f" (a duration: seconds, or a string such as {EXAMPLES})"
    return f"{key}: {text}"


def _field_type(key: str) -> msgspec.inspect.Type | None:
    """The type of the setting at `key` (`bus.nats.consumers[0].name`), if any."""
    node: msgspec.inspect.Type = msgspec.inspect.type_info(Config)
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        while isinstance(node, msgspec.inspect.UnionType) and len(node.types) == 1:
            node = node.types[0]
        if part.startswith("["):
            if not isinstance(node, msgspec.inspect.ListType):
                return None
            node = node.item_type
            continue
        if not isinstance(node, msgspec.inspect.StructType):
            return None
        found = next((f for f in node.fields if f.encode_name == part), None)
        if found is None:
            return None
        node = found.type
    return node
