"""A tap on a connection's requests: what `angzarr_es.testing.faults` installs.

Every request a client makes with a reply (a publish with its PubAck, a
JetStream API call, a single Direct Get) goes through `Mux.ask`, and every
read answered by a batch of messages (a Direct Get batch, a consumer pull)
through `Mux.gather`. With a tap set, each is handed to the tap's function
as a `Request`, with a `forward` that sends it as it would have gone; the
function may answer in its place, change the answer, raise the error the
client would have raised, or wait. Without a tap the mux pays one attribute
check per request.

The types speak the NATS protocol (subjects, payloads, headers, status
headers), not the library's internals, so a tap written against them keeps
working when the internals change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from angzarr_es._nats.collector import Collector

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
    "tapped_batch",
    "tapped_request",
]


@dataclass(frozen=True, slots=True)
class Request:
    """One request as it goes on the wire."""

    subject: str
    """The subject it is published to (a stream's subject for a publish,
    `$JS.API.…` for a JetStream API call or a Direct Get)."""
    payload: bytes = b""
    headers: Mapping[str, str] | None = None
    what: str = "request"
    """What the client is doing, as its error messages name it."""


@dataclass(frozen=True, slots=True)
class Reply:
    """The one reply to a request: its body and headers (a `Status` header for
    a status reply such as 503, no responders)."""

    data: bytes = b""
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a batch reply."""

    data: bytes
    reply: str = ""
    """Its reply subject (a pulled message's ack subject; "" for Direct Get)."""
    sequence: str = ""
    """Its stream sequence from the `Nats-Sequence` header ("" when not sent)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """The replies to a batch read, in order, and how the batch ended."""

    messages: list[Message] = field(default_factory=list)
    status: str = ""
    """The status that ended the batch ("" when it ended at the count asked for)."""
    last_sequence: int = 0
    """`Nats-Last-Sequence` of the end-of-batch status (Direct Get)."""
    pending: int = 0
    """`Nats-Num-Pending` of the end-of-batch status: messages left after the batch."""


Forward = Callable[[Request], Awaitable[Reply]]
OnRequest = Callable[[Request, Forward], Awaitable[Reply]]
BatchForward = Callable[[Request], Awaitable[Batch]]
OnBatch = Callable[[Request, BatchForward], Awaitable[Batch]]


@dataclass(frozen=True, slots=True)
class Tap:
    """What to call for requests (`on_request`) and batch reads (`on_batch`);
    None leaves that kind untouched."""

    on_request: OnRequest | None = None
    on_batch: OnBatch | None = None


async def tapped_request(
    on_request: OnRequest,
    send: Callable[[str, bytes, dict[str, str] | None], Awaitable[Msg]],
    nc: NatsClient,
    request: Request,
) -> Msg:
    """`request` through `on_request`, `send` (the mux's own) as its forward."""

    async def forward(request: Request) -> Reply:
        headers = None if request.headers is None else dict(request.headers)
        msg = await send(request.subject, request.payload, headers)
        return Reply(msg.data, msg.headers)

    reply = await on_request(request, forward)
    got = None if reply.headers is None else dict(reply.headers)
    return Msg(_client=nc, subject="", reply="", data=reply.data, headers=got)


async def tapped_batch(
    on_batch: OnBatch,
    gather: Callable[[Request], Awaitable[Collector]],
    request: Request,
    expect: int,
) -> Collector:
    """`request` through `on_batch`, `gather` (the mux's own) as its forward."""

    async def forward(request: Request) -> Batch:
        got = await gather(request)
        messages = [Message(data, reply, seq) for data, reply, seq in got.replies]
        return Batch(messages, got.status, got.last_seq, got.pending)

    batch = await on_batch(request, forward)
    collector = Collector(expect, request.subject, request.what)
    collector.replies = [(r.data, r.reply, r.sequence) for r in batch.messages]
    collector.size = sum(len(r.data) for r in batch.messages)
    collector.status = batch.status
    collector.last_seq, collector.pending = batch.last_sequence, batch.pending
    collector.done.set_result(None)
    return collector
