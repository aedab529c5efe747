"""The wire's own request path: reply routing, timeouts, no responders."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from angzarr_es._nats import Wire
from angzarr_es._nats.connection import FastClient as _Client
from angzarr_es._nats.mux import SWEEP_INTERVAL
from angzarr_es.config import NatsConfig
from angzarr_es.embedded import EmbeddedServer
from angzarr_es.errors import StoreTimeout, StoreUnavailable
from tests.support.cluster import eventually


async def interest_registered(nc: NatsClient) -> None:
    """Return once the server has our subscriptions: nats-py 2.16's flush()
    writes its PING ahead of a still-buffered SUB, so one PONG does not prove
    the SUB arrived; a second round trip, sent after it, does."""
    await nc.flush()
    await nc.flush()


@pytest.fixture
async def wire(nats_url: str) -> AsyncIterator[Wire]:
    w = await Wire.connect(NatsConfig(url=nats_url, request_timeout=0.3))
    yield w
    await w.close()


@contextlib.asynccontextmanager
async def echo_responder(nats_url: str, subject: str) -> AsyncIterator[None]:
    """A second client answering requests on `subject` with the body reversed."""
    responder = await nats.connect(nats_url)

    async def echo(msg: Msg) -> None:
        await responder.publish(msg.reply, msg.data[::-1])

    await responder.subscribe(subject, cb=echo)
    await interest_registered(responder)
    try:
        yield
    finally:
        await responder.close()


async def test_concurrent_requests_get_their_own_replies(wire: Wire, nats_url: str) -> None:
    async with echo_responder(nats_url, "echo.*"):
        bodies = [f"request-{i}".encode() for i in range(300)]
        replies = await asyncio.gather(
            *(wire.mux.request(f"echo.{i % 7}", body) for i, body in enumerate(bodies))
        )
        assert [r.data for r in replies] == [b[::-1] for b in bodies]
        assert not wire.mux.pending  # nothing left behind
    # Replies were handed over in the reader task, not through nats-py's queue.
    assert isinstance(wire.nc, _Client)
    assert wire.mux.served_directly


async def test_a_request_nobody_answers_times_out(wire: Wire, nats_url: str) -> None:
    silent = await nats.connect(nats_url)
    await silent.subscribe("silent")
    await interest_registered(silent)
    try:
        started = time.monotonic()
        with pytest.raises(StoreTimeout, match="no answer"):
            await wire.mux.request("silent", b"x", timeout=0.2, what="ask silent")
        waited = time.monotonic() - started
        assert 0.2 <= waited < 0.2 + SWEEP_INTERVAL + 1.0
        assert not wire.mux.pending
    finally:
        await silent.close()


async def test_no_responders_is_unavailable(wire: Wire) -> None:
    with pytest.raises(StoreUnavailable, match="no responders"):
        await wire.mux.request("nobody.listens.here", b"x")


async def test_close_fails_pending_requests(wire: Wire, nats_url: str) -> None:
    silent = await nats.connect(nats_url)
    arrived = asyncio.Event()

    async def swallow(msg: Msg) -> None:
        arrived.set()

    await silent.subscribe("silent2", cb=swallow)
    await interest_registered(silent)
    try:
        pending = asyncio.ensure_future(wire.mux.request("silent2", b"x", timeout=5))
        await asyncio.wait_for(arrived.wait(), 5)
        assert wire.mux.pending == 1
        await wire.close()
        with pytest.raises(StoreUnavailable, match="closed"):
            await asyncio.wait_for(pending, 2)
    finally:
        await silent.close()


async def test_headers_reach_the_responder(wire: Wire, nats_url: str) -> None:
    responder = await nats.connect(nats_url)

    async def echo_headers(msg: Msg) -> None:
        headers = msg.headers or {}
        await responder.publish(
            msg.reply, "|".join(f"{k}={v}" for k, v in headers.items()).encode()
        )

    await responder.subscribe("headers", cb=echo_headers)
    await interest_registered(responder)
    try:
        got = await wire.mux.request("headers", b"x", headers={"A-B": "1", "Nats-Msg-Id": "abc-2"})
        assert got.data == b"A-B=1|Nats-Msg-Id=abc-2"
        # A value with a line break goes through nats-py, which escapes it.
        got = await wire.mux.request("headers", b"x", headers={"A": "x\r\ny"})
        assert b"\r" not in got.data
        assert got.data.startswith(b"A=x")
    finally:
        await responder.close()


def count_takes(nc: _Client) -> list[int]:
    """Record the bytes `FastParser.take` dispatches from the socket callback."""
    taken: list[int] = []
    parser = nc.parser
    take = parser.take

    def counting(data: bytes) -> int:
        n = take(data)
        taken.append(n)
        return n

    parser.take = counting  # type: ignore[method-assign]
    return taken


async def test_replies_are_dispatched_as_they_arrive(wire: Wire, nats_url: str) -> None:
    assert isinstance(wire.nc, _Client)
    taken = count_takes(wire.nc)
    async with echo_responder(nats_url, "echo.sooner"):
        for i in range(20):
            body = b"ab%d" % i
            assert (await wire.mux.request("echo.sooner", body)).data == body[::-1]
    # With one request at a time the reader task is idle when a reply arrives,
    # so the replies were dispatched in the socket callback (all of them but
    # one arriving behind a server PING, which the reader task then handles).
    assert sum(1 for n in taken if n) >= 19


async def test_replies_are_read_sooner_again_after_a_reconnect() -> None:
    """The socket reader is replaced on each reconnect: the new one offers
    its bytes to the parser too."""
    with EmbeddedServer(monitor_port=None) as server:
        wire = await Wire.connect(NatsConfig(url=server.url))
        try:
            nc = wire.nc
            assert isinstance(nc, _Client)
            assert nc.reads_sooner
            await asyncio.to_thread(server.kill)
            await asyncio.to_thread(server.start)  # the same port

            async def reconnected() -> bool | None:
                return True if wire.connected and nc.stats["reconnects"] else None

            await eventually(reconnected, timeout=10, what="the reconnect")
            assert nc.reads_sooner  # offered on the new connection too
            assert (await wire.js.account_info()).streams == 0
        finally:
            await wire.close()
