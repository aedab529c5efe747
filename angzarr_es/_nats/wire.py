"""`Wire`: one connection to NATS and the parts of the seam that use it.

    wire.mux      requests and batch reads over one reply inbox (mux.py)
    wire.js       the JetStream API, one method per operation (api.py)
    wire.reads    Direct Get and leader reads (reads.py)
    wire.replayer replays through an ephemeral consumer (replay.py)

`Wire` itself connects, closes, publishes, and says what it is connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence

import nats.errors
from nats.aio.client import Client as NatsClient

from angzarr_es._nats import messages as m
from angzarr_es._nats.api import JetStream
from angzarr_es._nats.connection import open_connection
from angzarr_es._nats.errors import PROVISION_HINT, translated, violation
from angzarr_es._nats.mux import Mux
from angzarr_es._nats.reads import Reads
from angzarr_es._nats.replay import Replayer
from angzarr_es.config import NatsConfig, redact_url
from angzarr_es.errors import AngzarrESError, StoreUnavailable

__all__ = ["BatchMessage", "Wire"]

BatchMessage = tuple[str, bytes, dict[str, str]]
"""One message of an atomic batch: (subject, payload, its own headers)."""

log = logging.getLogger("angzarr_es")


class Wire:
    """A connected NATS client with the requests the store and the bus need."""

    def __init__(self, nc: NatsClient, cfg: NatsConfig) -> None:
        self.nc = nc
        self.cfg = cfg
        self.timeout = cfg.request_timeout
        self.mux = Mux(nc, self.timeout)
        self.js = JetStream(self.mux)
        self.reads = Reads(self.mux, self.js)
        self.replayer = Replayer(self.mux, self.js)

    @classmethod
    async def connect(cls, cfg: NatsConfig) -> Wire:
        """Connect to the configured servers.

        Raises:
            StoreUnavailable: no server could be reached.
            PermissionDenied: the server refused the credentials, or our reply inbox.
        """
        holder: list[Wire] = []

        def lost() -> None:
            holder[0].mux.fail_collectors(
                StoreUnavailable("connection to NATS lost during the read; retry it")
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

    async def close(self) -> None:
        """Drain nothing, close the connection; pending requests fail."""
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

    async def publish_commit(
        self, subject: str, payload: bytes, headers: dict[str, str], timeout: float
    ) -> m.PubAck:
        """Publish to a stream subject and decode the PubAck.

        Raises StoreUnavailable at once, sending nothing, while the connection
        is down: nats-py would hold the message and send it on reconnect,
        possibly long after the append reported a timeout.
        """
        if not self.nc.is_connected:
            raise StoreUnavailable(f"append to {subject}: not connected to NATS (nothing sent)")
        msg = await self.mux.ask(subject, payload, headers, timeout, f"append to {subject}")
        if msg.headers and msg.headers.get(m.STATUS) == "503":
            raise StoreUnavailable(
                f"append to {subject}: no stream captures this subject "
                f"(create the event stream with {PROVISION_HINT})"
            )
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
