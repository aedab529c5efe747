"""Faults on the wire, for tests of code that uses a `Client`.

`intercept` hands every request the client makes with a reply (a publish and
its PubAck, a JetStream API call, a single Direct Get) to `on_request`, and
every read answered by a batch of messages (a Direct Get batch, a replay
pull) to `on_batch`, each with a `forward` that sends it as it would have
gone. The function answers in its place, changes the answer, raises what the
client raises for that failure, or waits. The types speak the NATS protocol,
so a test written with them does not depend on the library's internals.

    async def lose_the_ack(request: Request, forward: Forward) -> Reply:
        await forward(request)                  # stored on the server...
        raise StoreTimeout(f"{request.what}: reply lost")  # ...its ack lost

    with faults.intercept(client, on_request=lose_the_ack):
        await store.append(pid, events, expected=0)

Failures the client reports for a request: `StoreTimeout` (no answer in
time: the request may have been served), `StoreUnavailable` (not connected,
nothing sent). A JetStream error reply is built with `error_reply`, a status
reply (503: no responders) with `status_reply`. `operation(request)` names
what a request is. A projector's or catch-up's pulls are not intercepted;
`pull_status` sends them a status as the server would (409 "Consumer
Deleted"). Core NATS subscriptions: stop or restart the server
(`angzarr_es.embedded`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import msgspec

from angzarr_es._nats import api
from angzarr_es._nats.tap import (
    Batch,
    BatchForward,
    Forward,
    Message,
    OnBatch,
    OnRequest,
    Reply,
    Request,
    Tap,
)
from angzarr_es._nats.wire import TapPoint
from angzarr_es.client import Client

__all__ = [
    "Batch",
    "BatchForward",
    "Forward",
    "Message",
    "OnBatch",
    "OnRequest",
    "Reply",
    "Request",
    "Tap",
    "TapPoint",
    "error_reply",
    "intercept",
    "operation",
    "pull_status",
    "status_reply",
]


@contextmanager
def intercept(
    client: Client | TapPoint,
    *,
    on_request: OnRequest | None = None,
    on_batch: OnBatch | None = None,
) -> Iterator[None]:
    """Route `client`'s requests through `on_request` and its batch reads
    through `on_batch` inside the block (one interception per client at a time).
    `client` may also be the `TapPoint` of a connection no client owns: an
    eventsourcing factory's, `TapPoint(factory.datastore.wire)`.

    Raises:
        RuntimeError: the client is intercepted already.
    """
    point = client if isinstance(client, TapPoint) else client.tap
    old = point.set(Tap(on_request, on_batch))
    if old is not None:
        point.set(old)
        raise RuntimeError("this client is intercepted already: leave that block first")
    try:
        yield
    finally:
        point.set(None)


async def pull_status(client: Client, consumer: str, status: str, description: str = "") -> int:
    """Send every open pull of the consumer named `consumer` on `client`'s
    connection (a projector's, a catch-up subscription's) a status as the
    server sends it, over NATS: "409" "Consumer Deleted" as a cluster sends
    when the consumer moves, "409" "Leadership Change", "408" "Request
    Timeout". Returns how many pulls got it (0: none open now)."""
    return await client.tap.pull_status(consumer, status, description)


def operation(request: Request) -> str:
    """The JetStream API operation a request is, e.g. "STREAM.INFO",
    "DIRECT.GET", "STREAM.MSG.GET", "CONSUMER.CREATE"; "" for a publish or
    any other subject."""
    return api.operation(request.subject)


def error_reply(request: Request, code: int, err_code: int, description: str) -> Reply:
    """The reply JetStream sends when it refuses `request`: an API error for
    an API call, a PubAck carrying the error for a publish.

    `code` is the HTTP-like status (400, 404, 503), `err_code` JetStream's
    own (10071: wrong last sequence; 10008: JetStream temporarily unavailable).
    """
    error = {"code": code, "err_code": err_code, "description": description}
    if request.subject.startswith(api.API):
        body = {"type": "io.nats.jetstream.api.v1.error", "error": error}
    else:
        body = {"error": error}
    return Reply(msgspec.json.encode(body))


def status_reply(status: str, description: str = "") -> Reply:
    """A status reply: "503" when nobody serves the subject (no responders,
    a stream without a leader), "404"/"408" and so on for Direct Get."""
    headers = {"Status": status}
    if description:
        headers["Description"] = description
    return Reply(b"", headers)
