"""The server's share: the same requests over a bare asyncio socket, no client library.

No NATS client runs here: a protocol object writes the request's bytes and
resolves a future when the reply's last bytes have arrived. What it measures
is nats-server, the kernel and one pass of the event loop, so the rows it adds
show how much of each operation no client-side work can remove.

A load is one batch Direct Get; the reply is complete when its end-of-batch
status (`NATS/1.0 204`) has arrived. The timed loop only looks for that marker
at the tail of the bytes received; `check_load` parses a whole reply and counts
its messages, so a run cannot silently time truncated reads.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import cast
from urllib.parse import urlsplit

import msgspec

_CONNECT = (
    b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,'
    b'"protocol":0,"name":"bench-wire"}\r\n'
)
_INBOX = b"_BENCH_WIRE."
_EOB = b"NATS/1.0 204"
_ACK_END = b"}\r\n"
_TAIL = 256
TIMEOUT = 10.0


class Unsupported(Exception):
    """The server needs more than this bare client speaks (credentials, TLS)."""


class _Reply(msgspec.Struct):
    seq: int = 0
    error: dict[str, object] | None = None


_decode_reply = msgspec.json.Decoder(_Reply).decode


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.tail = b""
        self.carry = b""
        self.mark = b"PONG\r\n"
        self.waiter: asyncio.Future[bytes] | None = None
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not derive from asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        chunks = self.chunks
        chunks.append(data)
        # The server's keep-alive, looked for where a read begins or ends (and
        # across two reads): scanning whole replies would cost the row more than
        # the server's share it measures, and nats-server holds its PINGs back
        # while a client is being written to. A PONG not asked for is harmless.
        head = self.carry + data[:6]
        self.carry = data[-5:]
        if (b"PING\r\n" in head or data.endswith(b"PING\r\n")) and self.transport is not None:
            self.transport.write(b"PONG\r\n")
        waiter = self.waiter
        if waiter is None:
            return
        tail = self.tail + (data if len(data) <= 4 * _TAIL else data[-_TAIL:])
        self.tail = tail[-_TAIL:]
        if self.mark in tail:
            self.waiter = None
            self.tail = b""
            whole = b"".join(chunks)
            chunks.clear()
            if not waiter.done():
                waiter.set_result(whole)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("nats-server closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)


class WireClient:
    """One bare TCP connection speaking just enough NATS for a request."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol, stream: str) -> None:
        self._transport = transport
        self._protocol = protocol
        self._direct = f"$JS.API.DIRECT.GET.{stream}".encode()
        # An inbox of its own: two runs against one server must not read each
        # other's replies.
        self._inbox = _INBOX + uuid.uuid4().hex.encode()
        self._deadline = 0.0
        self._watchdog: asyncio.TimerHandle | None = None

    @classmethod
    async def connect(cls, url: str, stream: str) -> WireClient:
        """Connect to the first server of `url` (comma-separated URLs allowed).

        Raises:
            Unsupported: the server requires credentials or TLS.
        """
        first = url.split(",")[0].strip()
        parts = urlsplit(first if "://" in first else "nats://" + first)
        if parts.scheme not in ("nats", ""):
            raise Unsupported(f"{parts.scheme}:// is not plain TCP")
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(
            _Protocol, parts.hostname or "127.0.0.1", parts.port or 4222
        )
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = cls(transport, protocol, stream)
        try:
            greeting = await client._greeting()
            info = msgspec.json.decode(greeting.partition(b"INFO ")[2].partition(b"\r\n")[0])
            if info.get("auth_required") or info.get("tls_required"):
                raise Unsupported("the server asks for credentials or TLS, which it does not speak")
            subscribe = b"SUB " + client._inbox + b" 1\r\nPING\r\n"
            await client._exchange(_CONNECT + subscribe, b"PONG\r\n")
        except BaseException:
            await client.close()
            raise
        return client

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._transport.close()

    async def _greeting(self) -> bytes:
        """The server's INFO line, which may have arrived before anyone waited."""
        protocol = self._protocol
        early = b"".join(protocol.chunks)
        if b"\r\n" in early:
            return early
        protocol.chunks[:] = [early] if early else []
        protocol.tail = early[-_TAIL:]
        protocol.mark = b"\r\n"
        return await self._wait(b"")

    async def _exchange(self, request: bytes, mark: bytes) -> bytes:
        protocol = self._protocol
        if protocol.lost is not None:
            raise protocol.lost
        protocol.chunks.clear()
        protocol.tail = b""
        protocol.mark = mark
        return await self._wait(request)

    async def _wait(self, request: bytes) -> bytes:
        protocol = self._protocol
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes] = loop.create_future()
        protocol.waiter = waiter
        # A watchdog checks deadlines (once a second at most): a timer per request (or
        # asyncio.wait_for, about 16 µs a call here) would be counted as the
        # server's share.
        self._deadline = loop.time() + TIMEOUT
        if self._watchdog is None:
            self._watchdog = loop.call_later(min(1.0, TIMEOUT), self._watch)
        if request:
            self._transport.write(request)
        return await waiter

    def _watch(self) -> None:
        self._watchdog = None
        waiter = self._protocol.waiter
        if waiter is None or waiter.done():
            return
        loop = asyncio.get_running_loop()
        if loop.time() > self._deadline:
            waiter.set_exception(TimeoutError(f"no reply from nats-server in {TIMEOUT} s"))
            return
        self._watchdog = loop.call_later(min(1.0, TIMEOUT), self._watch)

    def append_request(self, subject: str, payload: bytes, last: int) -> bytes:
        """The bytes of one append carrying the expected-subject-sequence header."""
        hdr = b"NATS/1.0\r\nNats-Expected-Last-Subject-Sequence: %d\r\n\r\n" % last
        return b"HPUB %b %b %d %d\r\n%b%b\r\n" % (
            subject.encode(),
            self._inbox,
            len(hdr),
            len(hdr) + len(payload),
            hdr,
            payload,
        )

    async def append(self, subject: str, payload: bytes, last: int) -> int:
        """Append; returns the stream sequence from the PubAck."""
        reply = await self._exchange(self.append_request(subject, payload, last), _ACK_END)
        # The reply's MSG line, by its size: a server PING may come before it
        # (a full run lasts longer than the server's ping interval).
        at = reply.index(b"MSG ")
        end = reply.index(b"\r\n", at)
        size = int(reply[at:end].rsplit(b" ", 1)[1])
        ack = _decode_reply(reply[end + 2 : end + 2 + size])
        if ack.error is not None or not ack.seq:
            raise RuntimeError(f"wire append refused: {ack.error}")
        return ack.seq

    def load_request(self, subject: str, batch: int, start: int = 1) -> bytes:
        body = msgspec.json.encode(
            {"seq": start, "next_by_subj": subject, "batch": batch, "no_hdr": True}
        )
        return b"PUB %b %b %d\r\n%b\r\n" % (self._direct, self._inbox, len(body), body)

    async def load(self, request: bytes) -> int:
        """Send a prepared batch Direct Get; returns the bytes of the whole reply."""
        return len(await self._exchange(request, _EOB))

    async def check_load(self, request: bytes) -> int:
        """Send a batch Direct Get and count the messages before its status."""
        return count_messages(await self._exchange(request, _EOB))


def count_messages(data: bytes) -> int:
    """Messages in a stream of MSG/HMSG operations, up to the status-only end of batch."""
    count = pos = 0
    while pos < len(data):
        end = data.index(b"\r\n", pos)
        fields = data[pos:end].split()
        if fields[0] == b"MSG":
            size = int(fields[-1])
            count += 1
        elif fields[0] == b"HMSG":
            size = int(fields[-1])
            head = data[end + 2 : end + 2 + int(fields[-2])]
            if head.startswith(_EOB):
                return count
            count += 1
        elif fields[0] in (b"PING", b"PONG"):  # the server's keep-alive
            pos = end + 2
            continue
        else:
            raise ValueError(f"unexpected operation {fields[0]!r}")
        pos = end + 2 + size + 2
    raise ValueError("no end-of-batch status in the reply")
