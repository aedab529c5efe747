"""JetStream admin requests the tests make beside the library: stream and
consumer info, creating, changing and deleting them, raw messages.

Each call opens a connection of its own from the client's public `config`
(same servers, credentials and TLS) and closes it before returning: the
requests never pass through the client under test, so they neither disturb
it (its request counters, its faults) nor depend on its internals, and they
work on a client the test already closed. The JSON API calls return the
server's raw reply, for the caller to decode as it needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import msgspec
from nats.aio.msg import Msg

from angzarr_es import Client
from angzarr_es._nats import Wire
from angzarr_es._nats import messages as js
from angzarr_es.config import Config

# The request and reply structs of these calls, for the tests that build or
# decode them: `from tests.support.jsadmin import messages as js`.
messages = js


@asynccontextmanager
async def admin(client: Client) -> AsyncIterator[Wire]:
    """A connection of our own to `client`'s servers, closed on leaving."""
    wire = await Wire.connect(client.config.nats)
    try:
        yield wire
    finally:
        await wire.close()


async def api(client: Client, subject: str, body: bytes = b"") -> bytes:
    """Any JetStream API request; the raw JSON reply."""
    async with admin(client) as wire:
        return await wire.js.call(subject, body)


def _body(request: object) -> bytes:
    return request if isinstance(request, bytes) else msgspec.json.encode(request)


# -- streams -------------------------------------------------------------------


async def account_info(client: Client) -> bytes:
    return await api(client, "$JS.API.INFO")


async def stream_info(client: Client, name: str, *, subjects_filter: str = "") -> bytes:
    """STREAM.INFO; with `subjects_filter`, the per-subject counts too."""
    body = msgspec.json.encode({"subjects_filter": subjects_filter}) if subjects_filter else b""
    return await api(client, f"$JS.API.STREAM.INFO.{name}", body)


async def stream_info_json(
    client: Client, name: str, *, subjects_filter: str = ""
) -> dict[str, Any]:
    """STREAM.INFO decoded to plain JSON (config, state, cluster)."""
    info: dict[str, Any] = msgspec.json.decode(
        await stream_info(client, name, subjects_filter=subjects_filter)
    )
    return info


async def create_stream(client: Client, config: js.StreamConfig | dict[str, Any]) -> bytes:
    """STREAM.CREATE from a stream config (a Struct or the JSON dict)."""
    name = config["name"] if isinstance(config, dict) else config.name
    return await api(client, f"$JS.API.STREAM.CREATE.{name}", _body(config))


async def update_stream(client: Client, config: js.StreamConfig) -> bytes:
    return await api(client, f"$JS.API.STREAM.UPDATE.{config.name}", _body(config))


async def delete_stream(client: Client, name: str) -> None:
    """Remove a test stream (deny_delete forbids deleting messages, not the stream)."""
    await api(client, f"$JS.API.STREAM.DELETE.{name}")


async def stream_names(client: Client, subject: str) -> list[str]:
    """STREAM.NAMES of the streams capturing any subject `subject` matches."""
    async with admin(client) as wire:
        return await wire.js.stream_names(subject)


async def delete_layout_streams(client: Client, config: Config) -> None:
    """Delete every stream a test made under `config`'s names and prefix, in
    either layout: the event stream, the snapshot, dead-letter and
    correlation streams, and any domain stream (`<PREFIX>_<DOMAIN>`, ours or
    angzarr's) capturing the prefix's events."""
    nats = config.nats
    names = [nats.stream_name, nats.snapshot_stream, nats.dlq_stream, nats.correlation_stream]
    names += await stream_names(client, f"{nats.subject_prefix}.events.>")
    for name in dict.fromkeys(names):
        await delete_stream(client, name)


async def purge(client: Client, stream: str, subjects_filter: str = "", *, keep: int = 0) -> int:
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
    client: Client, stream: str, *, seq: int = 0, last_by_subj: str = "", next_by_subj: str = ""
) -> bytes:
    """STREAM.MSG.GET: by sequence, the last on a subject, or the next on one from `seq`."""
    request = js.MsgGetRequest(seq=seq, last_by_subj=last_by_subj, next_by_subj=next_by_subj)
    return await api(client, f"$JS.API.STREAM.MSG.GET.{stream}", _body(request))


async def direct_get_last(client: Client, stream: str, subject: str) -> Msg:
    """DIRECT.GET of the last message on `subject`, with its headers."""
    body = msgspec.json.encode({"last_by_subj": subject})
    async with admin(client) as wire:
        msg: Msg = await wire.mux.request(f"$JS.API.DIRECT.GET.{stream}", body)
    return msg


async def delete_message(client: Client, stream: str, seq: int) -> bytes:
    return await api(
        client, f"$JS.API.STREAM.MSG.DELETE.{stream}", _body(js.MsgGetRequest(seq=seq))
    )


# -- consumers -----------------------------------------------------------------


async def consumer_names(client: Client, stream: str) -> list[str]:
    raw = await api(client, f"$JS.API.CONSUMER.NAMES.{stream}")
    names: list[str] = msgspec.json.decode(raw).get("consumers") or []
    return names


async def consumer_info(client: Client, stream: str, name: str) -> bytes:
    return await api(client, f"$JS.API.CONSUMER.INFO.{stream}.{name}")


async def create_consumer(client: Client, stream: str, name: str, body: bytes) -> bytes:
    """CONSUMER.CREATE of a durable `name`; `body` is the encoded create request."""
    return await api(client, f"$JS.API.CONSUMER.CREATE.{stream}.{name}", body)


async def delete_consumer(client: Client, stream: str, name: str) -> bytes:
    return await api(client, f"$JS.API.CONSUMER.DELETE.{stream}.{name}")


# -- raw messages --------------------------------------------------------------


async def publish(
    client: Client, subject: str, payload: bytes, headers: dict[str, str] | None = None
) -> js.PubAck:
    """Store `payload` on a stream subject as it is, bypassing the store's checks."""
    async with admin(client) as wire:
        msg = await wire.mux.request(subject, payload, headers=headers)
    return js.pub_ack(msg.data)


async def publish_unacked(client: Client, subject: str, payload: bytes) -> None:
    """A core NATS publish, flushed to the server (no ack is asked for)."""
    async with admin(client) as wire:
        await wire.nc.publish(subject, payload)
        await wire.nc.flush()


# -- watching and speaking as the server -----------------------------------------------


@asynccontextmanager
async def watch(client: Client, subject: str) -> AsyncIterator[list[Msg]]:
    """The messages published on `subject` while the block runs, as a
    subscriber of our own sees them (JetStream API requests too: a pull
    request's reply subject is the inbox its answers go to)."""
    seen: list[Msg] = []

    async def keep(msg: Msg) -> None:
        seen.append(msg)

    async with admin(client) as wire:
        sub = await wire.nc.subscribe(subject, cb=keep)
        # Two round trips: nats-py's PING can overtake a still-buffered SUB.
        await wire.nc.flush()
        await wire.nc.flush()
        try:
            yield seen
        finally:
            await sub.unsubscribe()


async def send_status(client: Client, subject: str, status: int, description: str) -> None:
    """A message holding only a status line, as the server answers a pull
    request (409 "Consumer Deleted", 503 no leader, ...). nats-py publishes no
    status line, so it goes out on a raw socket (a plain connection without
    credentials, as the test servers are); returns once the server has it."""
    url = urlsplit(client.config.nats.servers[0])
    reader, writer = await asyncio.open_connection(url.hostname, url.port or 4222)
    try:
        await reader.readline()  # the server's INFO
        head = f"NATS/1.0 {status} {description}\r\n\r\n".encode()
        writer.write(
            b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n'
            b"HPUB %b %d %d\r\n%b\r\nPING\r\n" % (subject.encode(), len(head), len(head), head)
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), 5)
        assert answer == b"PONG\r\n", answer
    finally:
        writer.close()
        await writer.wait_closed()
