"""Baselines written straight against nats-py: the floor and the naive approach.

The floor does no store logic at all: it sends bytes that were serialized once,
keeps the aggregate's last stream sequence in a local variable, and parses only
what it must (the PubAck with msgspec, each loaded payload with
`EventBook.FromString`). The naive baseline is what a user of nats-py would
write without this library: `js.publish` with the expected-sequence header, and
an ordered push consumer for replay.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
import nats
import nats.js.errors
from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from angzarr_es import _codec
from angzarr_es.pb import core_pb2

H_EXPECTED = "Nats-Expected-Last-Subject-Sequence"
TIMEOUT = 10.0


class Ack(msgspec.Struct):
    seq: int = 0
    error: dict[str, object] | None = None


_classes: dict[str, type[Message] | None] = {}


def _decode_events(book: core_pb2.EventBook, out: list[Message]) -> None:
    """Decode each event of `book` to its message class, appending it to `out`
    (kept, as a caller that reads the events keeps them)."""
    for page in book.pages:
        packed = page.event
        cls = _classes.get(packed.type_url)
        if cls is None:
            cls = _classes[packed.type_url] = _codec._class_for(packed.type_url.rpartition("/")[2])
        out.append(packed if cls is None else cls.FromString(packed.value))


class Stepdown(msgspec.Struct):
    success: bool = False
    error: dict[str, object] | None = None


decode_ack = msgspec.json.Decoder(Ack).decode
decode_stepdown = msgspec.json.Decoder(Stepdown).decode
encode_json = msgspec.json.Encoder().encode


class RawClient:
    """One plain nats-py connection."""

    def __init__(self, nc: NatsClient, stream: str) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=TIMEOUT)
        self.stream = stream
        self._inbox = nc.new_inbox()
        self._books: list[core_pb2.EventBook] = []
        self._done: asyncio.Future[int] | None = None
        self._leftover: list[str] = []

    @classmethod
    async def connect(cls, url: str, stream: str, **options: Any) -> RawClient:
        """Connect to `url` (comma-separated URLs: a cluster); `options` are
        nats-py's (credentials, TLS: `benchmarks.connection.nats_options`)."""
        servers = [u.strip() for u in url.split(",") if u.strip()]
        nc = await nats.connect(servers, name="bench-raw", **options)
        raw = cls(nc, stream)
        await nc.subscribe(raw._inbox, cb=raw._on_direct)
        return raw

    @property
    def server_version(self) -> str:
        """The connected server's version, as nats-server prints it."""
        v = self.nc.connected_server_version
        return f"v{v.major}.{v.minor}.{v.patch}" + (f"-{v.dev}" if v.dev else "")

    async def close(self) -> None:
        await self.nc.close()

    # -- admin -----------------------------------------------------------------

    async def move_leader(self, stream: str, to: str) -> str:
        """Ask `stream`'s leader to step down in favour of server `to` (a
        STREAM.LEADER.STEPDOWN naming it, nats-server >= 2.11); the server's
        refusal, or "" once it accepted."""
        body = encode_json({"placement": {"preferred": to}})
        reply = await self.nc.request(
            f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body, timeout=TIMEOUT
        )
        answer = decode_stepdown(reply.data)
        if answer.error is not None:
            return str(answer.error.get("description", answer.error))
        return "" if answer.success else f"no success in {reply.data!r}"

    # -- appends ---------------------------------------------------------------

    async def request_append(self, subject: str, payload: bytes, last: int) -> Ack:
        """The floor: one request with the expected header, the ack parsed with msgspec."""
        msg = await self.nc.request(
            subject, payload, timeout=TIMEOUT, headers={H_EXPECTED: str(last)}
        )
        return decode_ack(msg.data)

    async def lookup_then_append(self, subject: str, payload: bytes) -> Ack:
        """The floor for an append with no cached position: Direct Get of the
        subject's last message for its stream sequence, then the request."""
        return await self.request_append(subject, payload, await self.last_sequence(subject))

    async def naive_append(self, subject: str, payload: bytes, last: int) -> int:
        """What a nats-py user writes: js.publish with the expected header."""
        ack = await self.js.publish(subject, payload, headers={H_EXPECTED: str(last)})
        return int(ack.seq)

    async def bulk_fill(self, subject: str, payloads: list[bytes], window: int = 500) -> int:
        """Store `payloads` on `subject` in order: plain publishes, each window
        closed by one request whose ack proves every earlier message of this
        connection was stored (with `sync_interval: always` each is fsynced).
        Returns the last one's stream sequence."""
        last = 0
        for start in range(0, len(payloads), window):
            chunk = payloads[start : start + window]
            for payload in chunk[:-1]:
                await self.nc.publish(subject, payload)
            reply = await self.nc.request(subject, chunk[-1], timeout=6 * TIMEOUT)
            ack = decode_ack(reply.data)
            if ack.error is not None or not ack.seq:
                raise RuntimeError(f"filling {subject} failed: {ack.error}")
            last = ack.seq
        return last

    async def replicated(self, subject: str, seq: int) -> None:
        """Wait until Direct Get (any replica) sees `subject`'s last message at
        `seq`: on a cluster a follower may not have stored it when the leader
        acked it."""
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while await self.last_sequence(subject) != seq:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"{subject}: replicas did not reach stream sequence {seq}")
            await asyncio.sleep(0.01)  # polling interval (set-up, not timed)

    async def bulk_publish(self, messages: list[tuple[str, bytes]], window: int = 500) -> None:
        """Store each (subject, payload) in order, as `bulk_fill` does for one subject."""
        for start in range(0, len(messages), window):
            chunk = messages[start : start + window]
            for subject, payload in chunk[:-1]:
                await self.nc.publish(subject, payload)
            subject, payload = chunk[-1]
            reply = await self.nc.request(subject, payload, timeout=6 * TIMEOUT)
            ack = decode_ack(reply.data)
            if ack.error is not None or not ack.seq:
                raise RuntimeError(f"filling {subject} failed: {ack.error}")

    async def last_sequence(self, subject: str) -> int:
        """The stream sequence of the last message on `subject` (0 if none)."""
        got = await self.nc.request(
            f"$JS.API.DIRECT.GET.{self.stream}.{subject}", b"", timeout=TIMEOUT
        )
        headers = got.headers or {}
        return int(headers.get("Nats-Sequence", "0")) if "Status" not in headers else 0

    # -- loads -----------------------------------------------------------------

    def _on_direct_msg(self, msg: Msg) -> None:
        done = self._done
        if done is None or done.done():
            return
        headers = msg.headers
        if headers and "Status" in headers:
            done.set_result(int(headers.get("Nats-Last-Sequence", "0") or 0))
            return
        self._books.append(core_pb2.EventBook.FromString(msg.data))

    async def _on_direct(self, msg: Msg) -> None:
        self._on_direct_msg(msg)

    async def direct_load(
        self, subject: str, batch: int = 1000, *, decode: bool = False, start: int = 1
    ) -> list[Any]:
        """The floor for loads: batch Direct Get with no_hdr from stream sequence
        `start`, every payload parsed.

        Returns what was read, for the caller to keep: the parsed books, or with
        `decode` each event decoded to its message class (the least a caller
        that reads every event needs).
        """
        out: list[Any] = []
        api = f"$JS.API.DIRECT.GET.{self.stream}"
        while True:
            self._books = []
            self._done = asyncio.get_running_loop().create_future()
            body = encode_json(
                {"seq": start, "next_by_subj": subject, "batch": batch, "no_hdr": True}
            )
            await self.nc.publish(api, body, reply=self._inbox)
            last = await asyncio.wait_for(self._done, TIMEOUT)
            books = self._books
            self._books = []
            for book in books:
                if decode:
                    _decode_events(book, out)
                else:
                    for page in book.pages:
                        _ = page.event
                    out.append(book)
            if len(books) < batch or not last:
                return out
            start = last + 1

    async def naive_load(self, subject: str, expect_events: int) -> list[Message]:
        """What a nats-py user writes: an ordered consumer, read until nothing is
        pending, each event decoded to its message class (and returned)."""
        sub = await self.js.subscribe(subject, ordered_consumer=True)
        events: list[Message] = []
        try:
            while True:
                msg = await sub.next_msg(timeout=TIMEOUT)
                _decode_events(core_pb2.EventBook.FromString(msg.data), events)
                meta = msg.metadata
                if meta.num_pending == 0:
                    self._leftover.append(meta.consumer or "")
                    break
        finally:
            await sub.unsubscribe()
        if len(events) != expect_events:
            raise RuntimeError(
                f"naive replay of {subject}: {len(events)} events, wanted {expect_events}"
            )
        return events

    async def delete_leftovers(self) -> None:
        """Delete the ordered consumers `naive_load` left behind (untimed: a
        user would leave them to the server's inactivity timeout)."""
        names, self._leftover = self._leftover, []
        for name in names:
            if name:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await self.js.delete_consumer(self.stream, name)
