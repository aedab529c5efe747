"""JetStream admin requests the tests make beside the library: stream and
consumer info, creating, changing and deleting them, raw messages.

This is the one place the tests reach into a client's connection
(`client._wire`) for requests of their own; fault injection that replaces a
wire method still patches the wire where it happens. The JSON API calls return
the server's raw reply, for the caller to decode as it needs.
"""

from __future__ import annotations

from typing import Any

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from angzarr_es import Client
from angzarr_es._nats import messages as js


def connection(client: Client) -> NatsClient:
    """The client's nats-py connection (to count subscriptions, publish with a reply, ...)."""
    nc: NatsClient = client._wire.nc
    return nc


def is_closed(client: Client) -> bool:
    """Whether the client's connection is closed."""
    return client.closed


def subscription_count(client: Client) -> int:
    """How many subscriptions the client's connection holds."""
    return len(connection(client)._subs)


def max_payload(client: Client) -> int:
    """The connected server's max_payload, in bytes."""
    return int(connection(client).max_payload)


async def api(client: Client, subject: str, body: bytes = b"") -> bytes:
    """Any JetStream API request; the raw JSON reply."""
    return await client._wire.js.call(subject, body)


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
    """Remove a test stream (deny_delete forbids deleting messages, not the stream).

    A client already closed (a test closed it on purpose) deletes nothing."""
    if not is_closed(client):
        await api(client, f"$JS.API.STREAM.DELETE.{name}")


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
    msg: Msg = await client._wire.mux.request(f"$JS.API.DIRECT.GET.{stream}", body)
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
    msg = await client._wire.mux.request(subject, payload, headers=headers)
    return js.pub_ack(msg.data)


async def publish_unacked(client: Client, subject: str, payload: bytes) -> None:
    """A core NATS publish, flushed to the server (no ack is asked for)."""
    nc = connection(client)
    await nc.publish(subject, payload)
    await nc.flush()
