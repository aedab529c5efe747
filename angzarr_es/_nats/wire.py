"""`Wire`: one connection to NATS and the parts of the seam that use it.

    wire.mux      requests and batch reads over one reply inbox (mux.py)
    wire.js       the JetStream API, one method per operation (api.py)
    wire.reads    Direct Get and leader reads (reads.py)
    wire.probe    why nobody served a stream: one shared STREAM.INFO probe (probe.py)
    wire.replayer replays through an ephemeral consumer (replay.py)

`Wire` itself connects, closes, publishes, and says what it is connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import nats.errors
from nats.aio.client import Client as NatsClient

from angzarr_es._nats import messages as m
from angzarr_es._nats.api import JetStream
from angzarr_es._nats.connection import abandon, open_connection
from angzarr_es._nats.errors import translated, violation
from angzarr_es._nats.mux import Mux, resend_after
from angzarr_es._nats.probe import StreamProbe
from angzarr_es._nats.reads import Reads
from angzarr_es._nats.replay import Replayer
from angzarr_es._nats.tap import Tap
from angzarr_es.config import NatsConfig, redact_url
from angzarr_es.errors import AngzarrESError, StoreTimeout, StoreUnavailable

if TYPE_CHECKING:  # consumers.py imports this module
    from angzarr_es._nats.consumers import Puller

__all__ = ["BatchMessage", "TapPoint", "Wire"]

BatchMessage = tuple[str, bytes, dict[str, str]]
"""One message of an atomic batch: (subject, payload, its own headers)."""

log = logging.getLogger("angzarr_es")

LIVENESS_TIMEOUT = 1.0
"""Seconds the connected server has to answer a PING once a request timed
out; silence past it (a frozen process or machine, a half-open connection)
moves the client to another server. A server answers PING from its read
loop, whatever JetStream is doing, in well under a millisecond on a LAN."""


class Wire:
    """A connected NATS client with the requests the store and the bus need."""

    def __init__(self, nc: NatsClient, cfg: NatsConfig) -> None:
        self.nc = nc
        self.cfg = cfg
        self.timeout = cfg.request_timeout
        self.mux = Mux(nc, self.timeout)
        self.js = JetStream(self.mux)
        self.probe = StreamProbe(self.mux, self.js)
        self.reads = Reads(self.mux, self.js, self.probe)
        self.replayer = Replayer(self.mux, self.js)
        # The consumers' pull inboxes open on this connection (`TapPoint.pull_status`).
        self.pullers: set[Puller] = set()
        self._liveness: asyncio.Task[None] | None = None
        self.mux.on_slow = self._check_alive

    @classmethod
    async def connect(cls, cfg: NatsConfig) -> Wire:
        """Connect to the configured servers.

        Raises:
            StoreUnavailable: no server could be reached.
            PermissionDenied: the server refused the credentials, or our reply inbox.
        """
        holder: list[Wire] = []

        def lost() -> None:
            mux = holder[0].mux
            mux.fail_collectors(
                StoreUnavailable("connection to NATS lost during the read; retry it")
            )
            # A request sent may have been served (a publish stored): unknown.
            mux.fail_requests(
                lambda what: StoreTimeout(f"{what}: connection to NATS lost before the reply")
            )

        nc = await open_connection(cfg, lambda exc: holder[0].on_async_error(exc), lost)
        wire = cls(nc, cfg)
        holder.append(wire)
        try:
            await wire.mux.start(cfg.connect_timeout)
        except AngzarrESError:
            await wire.close()
            raise
        return wire

    def on_async_error(self, exc: Exception) -> None:
        """nats-py reported an error outside any call: a permissions violation
        fails the requests it concerns; anything else is logged."""
        found = violation(exc)
        if found is None:
            log.debug("nats: %r", exc)
            return
        log.warning("nats: %s", exc)
        self.mux.permission_violation(found)

    def _check_alive(self) -> None:
        """A request ran out of time, or a publish went unanswered long enough
        to be sent again: is our own server still there?

        nats-py notices a silent server only after 2 unanswered pings, 120 s
        apart; until then every request times out (measured: the writers on
        a SIGSTOPped server stopped until it resumed). One PING at a time.
        """
        if (self._liveness is not None and not self._liveness.done()) or not self.connected:
            return
        self._liveness = asyncio.get_running_loop().create_task(self._ping())

    async def _ping(self) -> None:
        url = self.connected_url
        try:
            await self.nc.flush(timeout=LIVENESS_TIMEOUT)  # type: ignore[arg-type]
        except nats.errors.FlushTimeoutError:
            if abandon(self.nc):
                log.warning(
                    "nats: %s did not answer a PING within %gs after a request timed out: "
                    "reconnecting to another server",
                    url,
                    LIVENESS_TIMEOUT,
                )
        except (nats.errors.Error, OSError) as exc:  # closing or reconnecting already
            log.debug("nats: liveness PING to %s: %r", url, exc)

    async def close(self) -> None:
        """Drain nothing, close the connection; pending requests fail."""
        if self._liveness is not None:
            self._liveness.cancel()
        self.mux.fail_all(StoreUnavailable("connection closed"))
        # A reconnect loop whose cancellation Python 3.11's wait_for swallowed
        # would retry forever (seen with the server gone); with a bounded
        # budget it gives up on its own after one more try per server.
        self.nc.options["max_reconnect_attempts"] = 1
        if not self.nc.is_closed:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self.nc.close()
        reconnecting: asyncio.Task[None] | None = getattr(self.nc, "_reconnection_task", None)
        if reconnecting is not None and not reconnecting.done():
            reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, nats.errors.Error, OSError):
                await asyncio.wait({reconnecting}, timeout=self.cfg.connect_timeout + 1)

    # -- what we are connected to ------------------------------------------------

    @property
    def max_payload(self) -> int:
        """The connected server's max_payload, in bytes."""
        return int(self.nc.max_payload)

    @property
    def server_version(self) -> tuple[int, int, int]:
        """(major, minor, patch) of the connected server."""
        v = self.nc.connected_server_version
        return (v.major, v.minor, v.patch)

    @property
    def connected(self) -> bool:
        """Whether the connection is up (not reconnecting, not closed)."""
        return bool(self.nc.is_connected)

    @property
    def closed(self) -> bool:
        """Whether the connection was closed for good."""
        return bool(self.nc.is_closed)

    @property
    def connected_url(self) -> str:
        """The URL of the server currently connected to ("" if none), without credentials."""
        url = self.nc.connected_url
        return redact_url(url.geturl()) if url is not None else ""

    @property
    def subscription_count(self) -> int:
        """How many subscriptions the connection holds now."""
        return len(self.nc._subs)

    @property
    def jetstream_enabled(self) -> bool:
        """Whether the connected server announced JetStream."""
        info = getattr(self.nc, "_server_info", {}) or {}
        return bool(info.get("jetstream", False))

    @property
    def clustered(self) -> bool:
        """Whether the connected server is part of a cluster (it announced one)."""
        info = getattr(self.nc, "_server_info", {}) or {}
        return bool(info.get("cluster"))

    # -- publishing ----------------------------------------------------------------

    async def publish(
        self, subject: str, payload: bytes, *, headers: dict[str, str] | None = None
    ) -> None:
        """Fire-and-forget core NATS publish."""
        with translated(f"publish to {subject}"):
            await self.nc.publish(subject, payload, headers=headers)

    @staticmethod
    def resend_after(timeout: float) -> float:
        """Seconds after which an unanswered publish carrying a Nats-Msg-Id is
        sent again (same id, same expected sequence: JetStream stores it once),
        so an answer that took longer may be a later copy's."""
        return resend_after(timeout)

    async def publish_commit(
        self, stream: str, subject: str, payload: bytes, headers: dict[str, str], timeout: float
    ) -> m.PubAck:
        """Publish to a subject of `stream` and decode the PubAck.

        Raises StoreUnavailable at once, sending nothing, while the connection
        is down: nats-py would hold the message and send it on reconnect,
        possibly long after the append reported a timeout. A message with a
        Nats-Msg-Id is sent again while unanswered (`resend_after`). A 503 (nobody
        serves the subject: nothing stored) is explained by the stream's
        probe: the stream is missing, has no leader yet, or lacks a quorum.
        """
        what = f"append to {subject}"
        if not self.nc.is_connected:
            raise StoreUnavailable(f"{what}: not connected to NATS (nothing sent)")
        every = self.resend_after(timeout) if m.H_MSG_ID in headers else 0.0
        msg = await self.mux.ask(subject, payload, headers, timeout, what, every)
        if msg.headers and msg.headers.get(m.STATUS) == "503":
            raise await self.probe.unavailable(f"{what}: nothing stored", stream)
        return m.pub_ack(msg.data)

    async def publish_batch(self, messages: Sequence[BatchMessage], timeout: float) -> m.PubAck:
        """Publish `messages` as one atomic batch: all are stored, in order and
        with consecutive stream sequences, or none is. Only the commit (the
        last message) is answered; its PubAck's `seq` is the last message's.

        Each message keeps its own headers (an expected last subject sequence
        on the first message of a subject, a `Nats-Msg-Id`); the batch headers
        are added here, with a new batch id per call. Needs nats-server 2.12+
        and a stream with `allow_atomic`; at most 1,000 messages.

        Raises:
            StoreUnavailable: not connected (nothing sent), or no stream captures a subject.
            StoreTimeout: no answer in time (the batch may or may not be stored).
        """
        if not messages:
            raise ValueError("an atomic batch needs at least one message")
        what = f"atomic batch of {len(messages)} to {messages[0][0]}"
        if not self.nc.is_connected:
            raise StoreUnavailable(f"{what}: not connected to NATS (nothing sent)")
        batch_id = uuid.uuid4().hex
        *leading, (subject, payload, headers) = messages
        for position, (lead_subject, lead_payload, lead_headers) in enumerate(leading, 1):
            marked = {**lead_headers, m.H_BATCH_ID: batch_id, m.H_BATCH_SEQUENCE: str(position)}
            await self.mux.post(lead_subject, lead_payload, marked, what)
        commit = {
            **headers,
            m.H_BATCH_ID: batch_id,
            m.H_BATCH_SEQUENCE: str(len(messages)),
            m.H_BATCH_COMMIT: "1",
        }
        msg = await self.mux.ask(subject, payload, commit, timeout, what)
        if msg.headers and msg.headers.get(m.STATUS) == "503":
            raise StoreUnavailable(f"{what}: no stream captures this subject")
        return m.pub_ack(msg.data)


class TapPoint:
    """Where faults are put on one client's connection: its tap, and the
    statuses its consumers' pulls are sent."""

    def __init__(self, wire: Wire) -> None:
        self._wire = wire

    def set(self, tap: Tap | None) -> Tap | None:
        """Hand the connection's requests and batch reads to `tap` (None:
        stop); returns the tap it replaces."""
        mux = self._wire.mux
        old, mux.tap = mux.tap, tap
        return old

    async def pull_status(self, consumer: str, status: str, description: str = "") -> int:
        """Send each open pull of `consumer` on this connection the status
        message the server would (e.g. "409", "Consumer Deleted"), over NATS;
        returns how many were sent."""
        headers = {m.STATUS: status, m.H_DESCRIPTION: description}
        inboxes = [p.inbox for p in self._wire.pullers if p.consumer == consumer]
        with translated(f"status to {consumer}"):
            for inbox in inboxes:
                await self._wire.nc.publish(inbox, b"", headers=headers)
            await self._wire.nc.flush()
        return len(inboxes)
