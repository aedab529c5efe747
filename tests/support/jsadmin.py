"""JetStream admin requests the tests make beside the library: stream and
consumer info, creating, changing and deleting them, raw messages.

Each call opens a nats-py connection of its own from the client's public
`config` (same servers, credentials and TLS) and closes it before returning:
the requests never pass through the client under test, so they neither
disturb it (its request counters, its faults) nor depend on its internals,
and they work on a client the test already closed. The JSON API calls return
the server's raw reply, for the caller to decode as it needs (the structs are
in `tests.support.jsmessages`, also reachable as `jsadmin.messages`).
nats-py's errors (nats.errors.Error) pass through as they are.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from angzarr_es.config import BusConfig, Config, NatsConfig
from tests.support import jsmessages as js

# The request and reply structs of these calls, for the tests that build or
# decode them: `from tests.support.jsadmin import messages as js`.
messages = js


class Configured(Protocol):
    """Whose servers, credentials and TLS the admin connection uses: a
    `Client`, or `at(url)` for a server no client of the test is connected to."""

    @property
    def config(self) -> Config: ...


@dataclass(frozen=True)
class At:
    """The servers of a NatsConfig, for admin requests without a client."""

    nats: NatsConfig

    @property
    def config(self) -> Config:
        return Config(bus=BusConfig(nats=self.nats))


def at(url: str) -> At:
    """The admin target of the server at `url` (no credentials, no TLS)."""
    return At(NatsConfig(url=url))


# The API's error code for an account without JetStream.
JETSTREAM_NOT_ENABLED_FOR_ACCOUNT = 10039


def connect_options(config: NatsConfig) -> dict[str, Any]:
    """nats-py's connect options for `config`'s servers, credentials and TLS
    (a tls:// URL alone gets nats-py's default TLS context)."""
    options: dict[str, Any] = {
        "servers": config.servers,
        "name": config.name,
        "connect_timeout": config.connect_timeout,
        # Each server tried twice, so a test's dead server fails the call fast.
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.25,
    }
    auth = {
        "user_credentials": config.credentials,
        "nkeys_seed_str": config.nkey_seed,
        "user": config.user,
        "password": config.password,
        "token": config.token,
    }
    options.update({k: v for k, v in auth.items() if v is not None})
    if config.tls_ca or config.tls_cert:
        tls = ssl.create_default_context(cafile=config.tls_ca)
        if config.tls_cert:
            tls.load_cert_chain(config.tls_cert, config.tls_key)
        options["tls"] = tls
    return options


@asynccontextmanager
async def admin(client: Configured) -> AsyncIterator[NatsClient]:
    """A nats-py connection of our own to `client`'s servers, closed on leaving."""
    nc = NatsClient()
    await nc.connect(**connect_options(client.config.nats))
    try:
        yield nc
    finally:
        await nc.close()


async def request(
    client: Configured, subject: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> Msg:
    """One request on a connection of our own, within the config's request_timeout."""
    async with admin(client) as nc:
        return await nc.request(
            subject, body, timeout=client.config.nats.request_timeout, headers=headers
        )


async def api(client: Configured, subject: str, body: bytes = b"") -> bytes:
    """Any JetStream API request; the raw JSON reply."""
    return (await request(client, subject, body)).data


def _body(message: object) -> bytes:
    return message if isinstance(message, bytes) else js.encode(message)


# -- streams -------------------------------------------------------------------


async def account_info(client: Configured) -> bytes:
    return await api(client, "$JS.API.INFO")


async def stream_info(client: Configured, name: str, *, subjects_filter: str = "") -> bytes:
    """STREAM.INFO; with `subjects_filter`, the per-subject counts too."""
    body = msgspec.json.encode({"subjects_filter": subjects_filter}) if subjects_filter else b""
    return await api(client, f"$JS.API.STREAM.INFO.{name}", body)


async def stream_info_json(
    client: Configured, name: str, *, subjects_filter: str = ""
) -> dict[str, Any]:
    """STREAM.INFO decoded to plain JSON (config, state, cluster)."""
    info: dict[str, Any] = msgspec.json.decode(
        await stream_info(client, name, subjects_filter=subjects_filter)
    )
    return info


async def create_stream(client: Configured, config: js.StreamConfig | dict[str, Any]) -> bytes:
    """STREAM.CREATE from a stream config (a Struct or the JSON dict)."""
    name = config["name"] if isinstance(config, dict) else config.name
    return await api(client, f"$JS.API.STREAM.CREATE.{name}", _body(config))


async def update_stream(client: Configured, config: js.StreamConfig) -> bytes:
    return await api(client, f"$JS.API.STREAM.UPDATE.{config.name}", _body(config))


async def delete_stream(client: Configured, name: str) -> None:
    """Remove a test stream (deny_delete forbids deleting messages, not the stream)."""
    await api(client, f"$JS.API.STREAM.DELETE.{name}")


async def stream_names(client: Configured, subject: str) -> list[str]:
    """STREAM.NAMES of the streams capturing any subject `subject` matches."""
    body = js.encode({"subject": subject})
    reply: dict[str, Any] = msgspec.json.decode(await api(client, "$JS.API.STREAM.NAMES", body))
    error = reply.get("error")
    if error is not None and error.get("err_code") == JETSTREAM_NOT_ENABLED_FOR_ACCOUNT:
        return []
    assert error is None, error
    names: list[str] = reply.get("streams") or []
    return names


async def delete_layout_streams(client: Configured, config: Config) -> None:
    """Delete every stream a test made under `config`'s names and prefix, in
    either layout: the event stream, the snapshot, dead-letter and
    correlation streams, and any domain stream (`<PREFIX>_<DOMAIN>`, ours or
    angzarr's) capturing the prefix's events."""
    nats = config.nats
    names = [nats.stream_name, nats.snapshot_stream, nats.dlq_stream, nats.correlation_stream]
    names += await stream_names(client, f"{nats.subject_prefix}.events.>")
    for name in dict.fromkeys(names):
        await delete_stream(client, name)


async def purge(
    client: Configured, stream: str, subjects_filter: str = "", *, keep: int = 0
) -> int:
    """STREAM.PURGE of `stream` (only `subjects_filter`, when given; keeping
    the last `keep` messages); how many messages went."""
    body: dict[str, Any] = {}
    if subjects_filter:
        body["filter"] = subjects_filter
    if keep:
        body["keep"] = keep
    raw = await api(client, f"$JS.API.STREAM.PURGE.{stream}", msgspec.json.encode(body))
    reply: dict[str, Any] = msgspec.json.decode(raw)
    assert reply.get("success"), reply
    purged: int = reply.get("purged", 0)
    return purged


async def get_message(
    client: Configured, stream: str, *, seq: int = 0, last_by_subj: str = "", next_by_subj: str = ""
) -> bytes:
    """STREAM.MSG.GET: by sequence, the last on a subject, or the next on one from `seq`."""
    request = js.MsgGetRequest(seq=seq, last_by_subj=last_by_subj, next_by_subj=next_by_subj)
    return await api(client, f"$JS.API.STREAM.MSG.GET.{stream}", _body(request))


async def direct_get_last(client: Configured, stream: str, subject: str) -> Msg:
    """DIRECT.GET of the last message on `subject`, with its headers."""
    body = msgspec.json.encode({"last_by_subj": subject})
    return await request(client, f"$JS.API.DIRECT.GET.{stream}", body)


async def delete_message(client: Configured, stream: str, seq: int) -> bytes:
    return await api(
        client, f"$JS.API.STREAM.MSG.DELETE.{stream}", _body(js.MsgGetRequest(seq=seq))
    )


# -- consumers -----------------------------------------------------------------


async def consumer_names(client: Configured, stream: str) -> list[str]:
    raw = await api(client, f"$JS.API.CONSUMER.NAMES.{stream}")
    names: list[str] = msgspec.json.decode(raw).get("consumers") or []
    return names


async def consumer_info(client: Configured, stream: str, name: str) -> bytes:
    return await api(client, f"$JS.API.CONSUMER.INFO.{stream}.{name}")


async def create_consumer(client: Configured, stream: str, name: str, body: bytes) -> bytes:
    """CONSUMER.CREATE of a durable `name`; `body` is the encoded create request."""
    return await api(client, f"$JS.API.CONSUMER.CREATE.{stream}.{name}", body)


async def delete_consumer(client: Configured, stream: str, name: str) -> bytes:
    return await api(client, f"$JS.API.CONSUMER.DELETE.{stream}.{name}")


# -- raw messages --------------------------------------------------------------


async def publish(
    client: Configured, subject: str, payload: bytes, headers: dict[str, str] | None = None
) -> js.PubAck:
    """Store `payload` on a stream subject as it is, bypassing the store's checks."""
    return js.pub_ack((await request(client, subject, payload, headers)).data)


async def publish_unacked(client: Configured, subject: str, payload: bytes) -> None:
    """A core NATS publish, flushed to the server (no ack is asked for)."""
    async with admin(client) as nc:
        await nc.publish(subject, payload)
        await nc.flush()


# -- watching and speaking as the server -----------------------------------------------


@asynccontextmanager
async def watch(client: Configured, subject: str) -> AsyncIterator[list[Msg]]:
    """The messages published on `subject` while the block runs, as a
    subscriber of our own sees them (JetStream API requests too: a pull
    request's reply subject is the inbox its answers go to)."""
    seen: list[Msg] = []

    async def keep(msg: Msg) -> None:
        seen.append(msg)

    async with admin(client) as nc:
        sub = await nc.subscribe(subject, cb=keep)
        # Two round trips: nats-py's PING can overtake a still-buffered SUB.
        await nc.flush()
        await nc.flush()
        try:
            yield seen
        finally:
            await sub.unsubscribe()
