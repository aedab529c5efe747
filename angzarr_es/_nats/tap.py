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
