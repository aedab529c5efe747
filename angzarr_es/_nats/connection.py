"""Connecting to NATS, and nats-py's client with the store's shortcuts.

`open_connection` turns the configuration into nats-py's options and every
way a connect can fail into one angzarr_es error. `FastClient` hands the
messages of the store's own inboxes to their handlers in the reader task
(see `angzarr_es._nats.parser`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription

from angzarr_es._nats.credentials import NO_TLS, auth_options, check_credentials, tls_wanted
from angzarr_es._nats.errors import UNREACHABLE_HINT, connect_error, refused, translated
from angzarr_es._nats.parser import FastParser, parse_headers, report_handler_error
from angzarr_es.config import NatsConfig, redact_url
from angzarr_es.errors import StoreUnavailable

__all__ = [
    "FastClient",
    "RawHandler",
    "abandon",
    "is_served_directly",
    "open_connection",
    "serve_directly",
    "settle_subscriptions",
    "stop_serving",
]

log = logging.getLogger("angzarr_es")

# (subject, reply, payload, parsed headers) of one message, straight from the parser.
RawHandler = Callable[[bytes, bytes, bytes, "dict[str, str] | None"], None]


class _MonitoringPort(Exception):
    """The server URL is nats-server's HTTP monitoring port."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            f"{host}:{port} answers HTTP: that is nats-server's monitoring port, not "
            "its client port (4222 unless the server's `port` says otherwise)"
        )


async def _answers_http(host: str, port: int, timeout: float) -> bool:
    """Whether `host:port` answers an HTTP request (a NATS server speaks first,
    an HTTP server waits for the request: a connect there just times out)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        head = await asyncio.wait_for(reader.readexactly(5), timeout)
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return head == b"HTTP/"


class _GaveUp(Exception):
    """Connect abandoned: a fatal error was reported, or nats-py stopped progressing."""


class FastClient(NatsClient):
    """nats-py's client with one shortcut for the store's own inboxes.

    nats-py hands every message to a subscription through an asyncio queue
    and a task per subscription. For the reply inbox and replay inboxes, whose
    handlers only resolve a future or append to a list, that hop costs more
    than the handling: messages of the subscriptions registered in `direct`
    are handed to their handler in the reader task instead (`_process_msg` is
    nats-py's per-message hook; other subscriptions are untouched).

    Replies are also read one event-loop pass sooner. nats-py's reader task
    sleeps on an `asyncio.StreamReader` and wakes on the pass after the bytes
    arrive; when it is asleep with nothing buffered, the bytes are offered to
    `FastParser.take` as they arrive instead, which dispatches the leading
    whole messages of the direct subscriptions and leaves the rest to the
    reader task, in order (see `_read_sooner`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.direct: dict[int, RawHandler] = {}
        self._ps: FastParser = FastParser(self, self.direct)
        # A TLS connection or none: never a silent plaintext one.
        self.tls_wanted = False

    @property
    def parser(self) -> FastParser:
        """The parser this connection reads with."""
        return self._ps

    @property
    def reads_sooner(self) -> bool:
        """Whether the current connection's reader offers received bytes to
        the parser as they arrive (installed again on every reconnect)."""
        reader = getattr(self._transport, "_io_reader", None)
        return reader is not None and "feed_data" in vars(reader)

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        # Called with the server's first INFO before nats-py decides on TLS and
        # before it sends CONNECT (with any credentials): a server that offers
        # TLS without requiring it is upgraded, one that offers none refused.
        if (
            initial_connection
            and self.tls_wanted
            and not info.get("tls_required")
            and self._current_server is not None
            and self._current_server.uri.scheme not in ("ws", "wss")
        ):
            if not info.get("tls_available"):
                raise nats.errors.Error(NO_TLS)
            info["tls_required"] = True
        await super()._process_info(info, initial_connection)

    async def _connect_to_server(self, s: Any) -> None:
        # nats-py reuses its transport object for every attempt and opens the
        # next socket over the last one. After a handshake that timed out (a
        # frozen server accepts TCP but never sends INFO) that socket was
        # still open, and only the garbage collector closed it (a
        # ResourceWarning failed a nemesis run): close it first.
        if self._transport is not None:
            self._transport.close()  # type: ignore[no-untyped-call]  # nats-py: untyped
        await super()._connect_to_server(s)

    async def _read_loop(self) -> None:
        # Started on every (re)connect, once the transport (TLS included) is final.
        _read_sooner(self)
        await super()._read_loop()

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        handler = self.direct.get(sid)
        if handler is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        # No Msg object per message: the handlers need only these pieces.
        try:
            handler(subject, reply, data, parse_headers(headers) if headers else None)
        except Exception as exc:  # noqa: BLE001 - reported, and the stream goes on
            report_handler_error(self, exc)

    async def send(
        self, subject: str, reply: str, payload: bytes, headers: dict[str, str] | None
    ) -> None:
        """`publish()` for the store's own messages, whose header names and
        values are generated by this package: the header block is built in one
        join instead of nats-py's per-header validation and escaping."""
        if (
            headers is None
            or not self.is_connected
            or self.is_draining_pubs
            or len(payload) > self._max_payload
        ):
            await self.publish(subject, payload, reply=reply, headers=headers)
            return
        block = "NATS/1.0\r\n" + "".join([f"{k}: {v}\r\n" for k, v in headers.items()]) + "\r\n"
        if block.count("\n") != len(headers) + 2:
            # A line break inside a value: let nats-py escape it.
            await self.publish(subject, payload, reply=reply, headers=headers)
            return
        hdr = block.encode()
        size = len(hdr)
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += len(payload)
        # No reply subject (a message no one answers): "HPUB <subject> <sizes>".
        target = subject.encode() + (b" " + reply.encode() if reply else b"")
        await self._send_command(
            b"HPUB %b %d %d\r\n%b%b\r\n" % (target, size, size + len(payload), hdr, payload)
        )
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()


def _read_sooner(nc: FastClient) -> None:
    """Offer received bytes to the parser as they arrive while nats-py's reader
    task waits on an empty reader (a TCP or TLS connection's StreamReader;
    other transports are left as they are)."""
    reader = getattr(nc._transport, "_io_reader", None)
    if (
        type(reader) is not asyncio.StreamReader
        or "feed_data" in vars(reader)  # already offered
        or not hasattr(reader, "_waiter")
        or not hasattr(reader, "_buffer")
    ):
        return
    feed = reader.feed_data

    def feed_data(data: bytes) -> None:
        # A waiter means the reader task is idle in read() (not parsing), and
        # an empty buffer that nothing received earlier is ahead of `data`.
        if reader._waiter is not None and not reader._buffer and nc.is_connected:
            taken = nc._ps.take(data)
            if taken:
                if taken == len(data):
                    return
                data = data[taken:]
        feed(data)

    reader.feed_data = feed_data  # type: ignore[method-assign,assignment]


def abandon(nc: NatsClient) -> bool:
    """Leave the connected server (it went silent) for another of the pool now.

    It is dropped from the pool first, so that the reconnect, which shuffles
    the pool, cannot pick it again and wait out connect_timeout on it; a
    server that is still a cluster member comes back with the next server's
    INFO (its `connect_urls`). False, doing nothing, when there is no other
    server to go to or the connection is not up.
    """
    current = nc._current_server
    pool = nc._server_pool
    if current is None or not nc.is_connected or not any(s is not current for s in pool):
        return False
    pool[:] = [s for s in pool if s is not current]
    # nats-py's own answer to a stale connection (its ping does the same).
    asyncio.get_running_loop().create_task(nc._process_op_err(nats.errors.StaleConnectionError()))
    return True


def serve_directly(nc: NatsClient, sub: Subscription, handler: RawHandler) -> None:
    """Route `sub`'s messages to `handler` in the reader task, when `nc` allows it."""
    sid = getattr(sub, "_id", None)
    if isinstance(nc, FastClient) and isinstance(sid, int):
        nc.direct[sid] = handler


def is_served_directly(nc: NatsClient, sub: Subscription) -> bool:
    """Whether `serve_directly` routes `sub`'s messages (False on a plain nats-py client)."""
    return isinstance(nc, FastClient) and getattr(sub, "_id", None) in nc.direct


def stop_serving(nc: NatsClient, sub: Subscription) -> None:
    """Undo `serve_directly`."""
    if isinstance(nc, FastClient):
        nc.direct.pop(getattr(sub, "_id", -1), None)


async def settle_subscriptions(nc: NatsClient, timeout: float) -> None:
    """Return once the server has every subscription made so far.

    Two round trips: nats-py 2.16 writes flush()'s PING straight to the
    socket, ahead of a still-buffered SUB (measured: 13 of 600 publishes right
    after a subscribe and one flush were missed), so only the second PONG
    proves the interest.

    Raises:
        StoreTimeout, StoreUnavailable
    """
    with translated("flush"):
        for _ in range(2):
            await nc.flush(timeout=max(1, round(timeout)))


async def open_connection(
    cfg: NatsConfig,
    on_async_error: Callable[[Exception], None],
    on_disconnect: Callable[[], None],
) -> FastClient:
    """Connect to the configured servers. Once connected, nats-py's
    asynchronous errors go to `on_async_error`, lost connections to
    `on_disconnect`.

    Raises:
        ConfigError: a TLS file, the nkey seed or the .creds file is missing
            or not what its setting says, or the nkeys package is missing.
        StoreUnavailable: no server could be reached.
        PermissionDenied: the server refused the credentials.
    """
    connected = False
    # Errors that retrying cannot cure end the connect at once (nats-py
    # would retry, report "no servers", or hang after a failed TLS handshake).
    fatal: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()
    last: list[Exception] = []

    probes: list[asyncio.Task[None]] = []

    async def probe(host: str, port: int) -> None:
        if await _answers_http(host, port, cfg.connect_timeout) and not fatal.done():
            fatal.set_result(_MonitoringPort(host, port))

    async def on_error(exc: Exception) -> None:
        if connected:
            on_async_error(exc)
            return
        log.debug("nats: %r", exc)
        last.append(exc)
        if not fatal.done() and (
            refused(exc) or isinstance(exc, ssl.SSLError) or str(exc) == NO_TLS
        ):
            fatal.set_result(exc)
        server = nc._current_server
        if isinstance(exc, TimeoutError) and not probes and server is not None:
            # No INFO in time: an HTTP server (the monitoring port) waits for
            # a request instead. Ask it, once, while nats-py tries again.
            uri = server.uri
            if uri.scheme in ("nats", "tls") and uri.hostname:
                probes.append(asyncio.create_task(probe(uri.hostname, uri.port or 4222)))

    async def disconnected() -> None:
        if connected:
            on_disconnect()

    options: dict[str, Any] = {
        "servers": cfg.servers,
        "name": cfg.name,
        "connect_timeout": cfg.connect_timeout,
        "reconnect_time_wait": 0.25,
        # One retry per server at connect time, so a wrong URL fails fast;
        # reconnects after that are unlimited (set below).
        "max_reconnect_attempts": 1,
        "error_cb": on_error,
        "disconnected_cb": disconnected,
    }
    options.update(auth_options(cfg))
    check_credentials(cfg)
    where = ", ".join(redact_url(u) for u in cfg.servers)

    def reason(exc: BaseException) -> str:
        # nats-py's connect timeout (TCP or the server's INFO) says nothing.
        if isinstance(exc, TimeoutError):
            # Each server is tried twice: say how often it timed out, and how long that took.
            tries = sum(isinstance(e, TimeoutError) for e in last)
            if tries > 1:
                return (
                    f"{tries} attempts timed out after {cfg.connect_timeout:g}s each "
                    f"(connect_timeout), {loop.time() - begun:.1f}s in all"
                )
            return f"timed out after {cfg.connect_timeout:g}s (connect_timeout)"
        return str(exc) or repr(exc)

    loop = asyncio.get_running_loop()
    begun = loop.time()
    nc = FastClient()
    nc.tls_wanted = tls_wanted(cfg)
    attempt: asyncio.Future[Any] = asyncio.ensure_future(nc.connect(**options))
    # Each server is tried twice; past that nats-py is stuck, not trying.
    budget = 2 * len(cfg.servers) * (cfg.connect_timeout + 0.25) + 1
    try:
        await asyncio.wait([attempt, fatal], timeout=budget, return_when="FIRST_COMPLETED")
        if not attempt.done():
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError, nats.errors.Error, OSError):
                await attempt
            with contextlib.suppress(nats.errors.Error, OSError):
                await nc.close()
            raise _GaveUp
        attempt.result()
    except nats.errors.NoServersError as exc:
        cause = fatal.result() if fatal.done() else (last[-1] if last else exc)
        raise connect_error(where, cause, reason(cause)) from exc
    except (nats.errors.Error, TimeoutError, OSError) as exc:
        raise connect_error(where, exc, reason(exc)) from exc
    except _GaveUp:
        if not fatal.done():
            raise StoreUnavailable(
                f"cannot connect to NATS at {where}: no answer in time{UNREACHABLE_HINT}"
            ) from None
        cause = fatal.result()
        raise connect_error(where, cause, reason(cause)) from cause
    finally:
        for task in probes:
            task.cancel()
    nc.options["max_reconnect_attempts"] = -1
    connected = True
    return nc
