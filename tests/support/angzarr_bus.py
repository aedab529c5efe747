"""angzarr's NATS event bus, reproduced with nats-py for interop tests.

Written from angzarr's own source at angzarr-io/angzarr f97af362
(`src/bus/nats/bus.rs`, `consumer.rs`, `config.rs`, `otel.rs`, `mod.rs`) and
the async-nats 0.38.0 calls it makes. What it does, request by request:

- Streams: before every publish (`NatsEventBus::ensure_stream`) and before a
  consumer starts (`consumer::ensure_stream_for_domain`), `get_stream`
  (`STREAM.INFO.<name>`); on *any* error, `create_stream` with the name
  `{PREFIX}_{DOMAIN}` (both upper-cased), subjects `[{prefix}.events.{domain}.>]`,
  limits retention, file storage, and every other field at async-nats's
  `Default` (zero limits, discard old, no `allow_direct`, no duplicate window:
  the server's defaults). A refused create is the publish's error.
- Publish: subject `{prefix}.events.{domain}.{root}` with the root as a
  hyphenated UUID parsed from exactly 16 bytes (`Uuid::from_slice`; anything
  else fails the publish); the edition only in `cover.edition`, never in the
  subject; the payload the `EventBook` as given; headers `Angzarr-Correlation`
  when the cover has a correlation id, and the W3C trace context when a trace
  is active (`otel.rs`: `traceparent`, `tracestate`; `angzarr_otel`). No
  `Nats-Msg-Id`, no expected-sequence header: the server checks nothing.
- Consume: a durable pull consumer whose name and durable name are the queue
  name, filter `{prefix}.events.{domain}.>` (a domain is required), deliver
  all, explicit ack, got or created (`CONSUMER.INFO`, then `CONSUMER.CREATE`);
  pulls of 200 messages expiring after 30 s with a 5 s idle heartbeat
  (async-nats's `stream().heartbeat(5s)`); an undecodable payload is acked,
  a handler failure is `-NAK`ed (immediate redelivery), success `+ACK`ed.
  Each decoded message's `bus.consume` span is parented on the trace context
  its headers carry, as `otel.rs` extracts it (`AngzarrConsumer.parents`).

Events inside the books are packed with type URL
`type.googleapis.com/<full name>` (prost's and protobuf's `Any.pack` default).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import NoRespondersError

from angzarr_es.pb import core_pb2
from tests.support import angzarr_otel
from tests.support.angzarr_otel import Trace

__all__ = [
    "ANGZARR_COMMIT",
    "DEFAULT_EDITION",
    "HEADER_CORRELATION",
    "NO_RESPONDERS",
    "TYPE_PREFIX",
    "AngzarrBus",
    "AngzarrBusError",
    "AngzarrConsumer",
    "book",
    "divergence_bytes",
]

ANGZARR_COMMIT = "f97af362"
DEFAULT_EDITION = "angzarr"  # config.rs: the main timeline's edition name
HEADER_CORRELATION = "Angzarr-Correlation"  # config.rs
TYPE_PREFIX = "type.googleapis.com/"
NO_RESPONDERS = 503  # AngzarrBusError.err_code of a publish nothing answered
IDLE_HEARTBEAT = 5.0  # consumer.rs
PULL_BATCH = 200  # async-nats StreamBuilder defaults
PULL_EXPIRES = 30.0
_NS = 1_000_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

Handler = Callable[[core_pb2.EventBook, Msg], Awaitable[bool]]


class AngzarrBusError(Exception):
    """What angzarr's bus would report (BusError::Publish / ::Subscribe)."""

    def __init__(self, message: str, err_code: int = 0) -> None:
        super().__init__(message)
        self.err_code = err_code


def divergence_bytes(domain: str, sequence: int) -> bytes:
    """One `Edition.divergences` entry (`DomainDivergence{domain = 1; sequence = 2}`,
    field 2 of Edition), hand-encoded so the books can carry it whatever our
    generated classes know."""
    name = domain.encode()
    inner = b"\x0a" + _varint(len(name)) + name + b"\x10" + _varint(sequence)
    return b"\x12" + _varint(len(inner)) + inner


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def book(
    domain: str,
    root: uuid.UUID | bytes,
    first_sequence: int,
    events: Sequence[Message],
    *,
    correlation_id: str = "",
    edition: str | None = "",
    divergences: Sequence[tuple[str, int]] = (),
    created_at: dt.datetime | None = None,
    next_sequence: bool = False,
    type_prefix: str = TYPE_PREFIX,
) -> core_pb2.EventBook:
    """An EventBook as angzarr's aggregate hands it to the bus after a persist
    (`persist_events` in `src/orchestration/aggregate/local/mod.rs`): the cover
    with the 16-byte root, domain, correlation id and `Edition{name}` (the
    command's edition, "" for the main timeline, divergences cleared), the new
    pages with their sequence and time, events packed as `type_prefix` + full
    name, and `next_sequence` left at 0. `edition=None` leaves the cover's
    edition out; `divergences` and `next_sequence` add what other writers
    may set."""
    out = core_pb2.EventBook()
    cover = out.cover
    cover.root.value = root.bytes if isinstance(root, uuid.UUID) else root
    cover.domain = domain
    if correlation_id:
        cover.correlation_id = correlation_id
    if edition is not None:
        raw = core_pb2.Edition(name=edition).SerializeToString()
        raw += b"".join(divergence_bytes(d, s) for d, s in divergences)
        cover.edition.CopyFrom(core_pb2.Edition.FromString(raw))  # keeps field 2 as unknown
    stamp = created_at or dt.datetime.now(dt.UTC)
    delta = stamp - _EPOCH
    for offset, event in enumerate(events):
        page = out.pages.add()
        page.header.sequence = first_sequence + offset
        page.created_at.seconds = delta.days * 86400 + delta.seconds
        page.created_at.nanos = delta.microseconds * 1000
        page.event.CopyFrom(
            any_pb2.Any(
                type_url=type_prefix + event.DESCRIPTOR.full_name, value=event.SerializeToString()
            )
        )
    if next_sequence:
        out.next_sequence = first_sequence + len(events)
    return out


class AngzarrBus:
    """angzarr's `NatsEventBus` for one prefix, over its own connection."""

    def __init__(self, nc: NatsClient, prefix: str = "angzarr") -> None:
        self.nc = nc
        self.prefix = prefix
        # False: publish without the stream get-or-create (see `publish`).
        self.ensure = True
        self.created: list[str] = []  # streams this bus created (for the tests' cleanup)

    @classmethod
    async def connect(cls, url: str | list[str], prefix: str = "angzarr") -> AngzarrBus:
        return cls(await nats.connect(url, allow_reconnect=True), prefix)

    async def close(self) -> None:
        await self.nc.close()

    async def __aenter__(self) -> AngzarrBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def delete_created(self) -> None:
        """Delete the streams this bus created (test cleanup; angzarr never deletes)."""
        for name in self.created:
            await self._api(f"STREAM.DELETE.{name}", None)

    def stream_name(self, domain: str) -> str:
        return f"{self.prefix.upper()}_{domain.upper()}"

    def subject(self, domain: str, root: uuid.UUID) -> str:
        return f"{self.prefix}.events.{domain}.{root}"

    def stream_config(self, domain: str) -> dict[str, Any]:
        """The JSON async-nats 0.38 sends for angzarr's `StreamConfig`: the
        fields it always serializes, at their `Default` values except those
        angzarr sets."""
        return {
            "name": self.stream_name(domain),
            "max_bytes": 0,
            "max_msgs": 0,
            "max_msgs_per_subject": 0,
            "discard": "old",
            "subjects": [f"{self.prefix}.events.{domain}.>"],
            "retention": "limits",
            "max_consumers": 0,
            "max_age": 0,
            "storage": "file",
            "num_replicas": 0,
            "consumer_limits": None,
        }

    async def _api(self, subject: str, body: object) -> dict[str, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        reply = await self.nc.request(f"$JS.API.{subject}", payload, timeout=5)
        answer: dict[str, Any] = json.loads(reply.data)
        return answer

    async def ensure_stream(self, domain: str) -> None:
        """`get_stream`, then `create_stream` on any error (bus.rs `ensure_stream`).

        Raises:
            AngzarrBusError: the create was refused (e.g. 10065, subjects overlap).
        """
        name = self.stream_name(domain)
        info = await self._api(f"STREAM.INFO.{name}", {})
        if "error" not in info:
            return
        created = await self._api(f"STREAM.CREATE.{name}", self.stream_config(domain))
        error = created.get("error")
        if error:
            raise AngzarrBusError(
                f"Failed to create stream: {error.get('description')}", error.get("err_code", 0)
            )
        self.created.append(name)

    async def publish(
        self,
        event_book: core_pb2.EventBook,
        *,
        trace: Trace | None = None,
        ensure: bool | None = None,
    ) -> int:
        """`NatsEventBus::publish`; the stream sequence of the stored book.

        `trace` stands for the current span of a build with the `otel`
        feature (its headers as `angzarr_otel.headers` writes them).
        `ensure=False` (default: the bus's `ensure`) leaves out the stream
        get-or-create: a test of the read side on a stream that already
        captures the subject, such as the single layout's, where angzarr's
        own create would be refused.

        Raises:
            AngzarrBusError: where angzarr's publish fails (no cover, a root that
                is not 16 bytes, a refused stream create, a refused publish).
        """
        if not event_book.HasField("cover"):
            raise AngzarrBusError("Missing cover in EventBook")
        cover = event_book.cover
        if not cover.HasField("root"):
            raise AngzarrBusError("Missing root UUID in cover")
        if len(cover.root.value) != 16:
            raise AngzarrBusError(
                f"Invalid root UUID: invalid length: expected 16 bytes, found "
                f"{len(cover.root.value)}"
            )
        root = uuid.UUID(bytes=cover.root.value)
        if self.ensure if ensure is None else ensure:
            await self.ensure_stream(cover.domain)
        headers: dict[str, str] = {}
        if cover.correlation_id:
            headers[HEADER_CORRELATION] = cover.correlation_id
        if trace is not None:
            headers.update(angzarr_otel.headers(trace))
        try:
            reply = await self.nc.request(
                self.subject(cover.domain, root),
                event_book.SerializeToString(),
                timeout=5,
                headers=headers or None,
            )
        except NoRespondersError as exc:
            # async-nats's PublishErrorKind::StreamNotFound: nothing stores the
            # subject yet (on a cluster, a stream just created may not be
            # reachable from every server at once).
            raise AngzarrBusError(
                "Publish ack failed: no stream found for given subject", NO_RESPONDERS
            ) from exc
        ack: dict[str, Any] = json.loads(reply.data)
        error = ack.get("error")
        if error:
            raise AngzarrBusError(
                f"Publish ack failed: {error.get('description')}", error.get("err_code", 0)
            )
        seq: int = ack["seq"]
        return seq

    async def consumer(self, queue: str, domain: str, handler: Handler) -> AngzarrConsumer:
        """`create_subscriber(queue, domain)` + `subscribe(handler)` + `start_consuming()`.

        Raises:
            AngzarrBusError: the stream could not be created, or the consumer.
        """
        name = self.stream_name(domain)
        subject_filter = f"{self.prefix}.events.{domain}.>"
        try:
            await self.ensure_stream(domain)
        except AngzarrBusError as exc:  # consumer.rs words it as a subscribe error
            raise AngzarrBusError(str(exc), exc.err_code) from exc
        info = await self._api(f"STREAM.INFO.{name}", {})
        if "error" in info:
            raise AngzarrBusError(f"Failed to get stream: {info['error'].get('description')}")
        existing = await self._api(f"CONSUMER.INFO.{name}.{queue}", {})
        error = existing.get("error")
        if error and error.get("code") == 404:
            request = {
                "stream_name": name,
                "config": {
                    "name": queue,
                    "durable_name": queue,
                    "filter_subject": subject_filter,
                    "deliver_policy": "all",
                    "ack_policy": "explicit",
                    "replay_policy": "instant",
                },
                "action": "",  # async-nats's CreateOrUpdate
            }
            created = await self._api(f"CONSUMER.CREATE.{name}.{queue}.{subject_filter}", request)
            error = created.get("error")
        if error:
            raise AngzarrBusError(f"Failed to create consumer: {error.get('description')}")
        consumer = AngzarrConsumer(self.nc, name, queue, handler)
        await consumer.start()
        return consumer


class AngzarrConsumer:
    """`spawn_message_consumer`: pulls, decodes, dispatches, acks or naks."""

    def __init__(self, nc: NatsClient, stream: str, name: str, handler: Handler) -> None:
        self.nc = nc
        self.stream = stream
        self.name = name
        self.handler = handler
        self.undecodable = 0
        self.parents: list[tuple[str, Trace | None]] = []
        """(subject, the parent of its `bus.consume` span) per decoded message."""
        self._inbox = nc.new_inbox()
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._sub: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self._inbox, cb=self._queue.put)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def __aenter__(self) -> AngzarrConsumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _pull(self) -> None:
        request = {
            "batch": PULL_BATCH,
            "expires": int(PULL_EXPIRES * _NS),
            "idle_heartbeat": int(IDLE_HEARTBEAT * _NS),
        }
        await self.nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.name}",
            json.dumps(request).encode(),
            reply=self._inbox,
        )

    async def _run(self) -> None:
        # async-nats pulls again once half the batch has arrived, and after
        # a pull expires (408) or is cut short (409).
        await self._pull()
        pending = PULL_BATCH
        while True:
            msg = await self._queue.get()
            status = msg.headers.get("Status", "") if msg.headers else ""
            if status:
                if status in ("408", "409"):
                    await self._pull()
                    pending = PULL_BATCH
                continue  # 100: an idle heartbeat
            pending -= 1
            if pending <= PULL_BATCH // 2:
                await self._pull()
                pending += PULL_BATCH
            try:
                event_book = core_pb2.EventBook.FromString(msg.data)
            except DecodeError:
                self.undecodable += 1
                await msg.respond(b"+ACK")  # ack to prevent redelivery of bad messages
                continue
            self.parents.append((msg.subject, angzarr_otel.parent(msg.headers)))
            try:
                ok = await self.handler(event_book, msg)
            except Exception:  # noqa: BLE001 - any handler failure is a NAK (dispatch.rs)
                ok = False
            await msg.respond(b"+ACK" if ok else b"-NAK")
