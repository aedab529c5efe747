"""Catch-up subscriptions: replay a filter's history, then follow live commits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from angzarr_es import _nats
from angzarr_es._lifecycle import OpensOnEnter
from angzarr_es._nats import Wire
from angzarr_es._nats import messages as m
from angzarr_es._provision import create_domain_stream
from angzarr_es.bus._delivery import (
    Delivery,
    SkipHandler,
    Start,
    check_skip_handler,
    decode_delivery,
    start_config,
)
from angzarr_es.config import NatsConfig
from angzarr_es.errors import AngzarrESError, StoreError, StoreTimeout, StoreUnavailable

__all__ = ["CatchUp"]

log = logging.getLogger("angzarr_es")


class CatchUp(OpensOnEnter):
    """Replay a filter's history from `start`, then follow live commits.

    Reads through an ephemeral pull consumer (no acks, memory storage) that is
    recreated from the last sequence seen if a gap or a stall is detected, and
    deleted by `aclose()`. Use it as

        async with client.subscribe(filters.domain("player"), start="all") as sub:
            async for delivery in sub:
                ...
    """

    def __init__(
        self,
        wire: Wire,
        cfg: NatsConfig,
        subject: str,
        start: Start,
        *,
        window: int = 256,
        on_skip: SkipHandler | None = None,
        stream: str = "",
        domain: str = "",
    ) -> None:
        check_skip_handler(on_skip)
        self._wire = wire
        self._stream = stream or cfg.stream_name
        # Per-domain layout: the domain whose stream open() makes if missing.
        self._domain = domain
        self._on_skip = on_skip
        self._cfg = cfg
        self._subject = subject
        self._start = start
        start_config(start)  # validate early
        self._window = window
        self._queue: asyncio.Queue[_nats.Pulled] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._name = ""
        self._puller: _nats.Puller | None = None
        self._dseq = 0
        self._last_sseq = 0
        self._created = False
        self._broken = False
        self._closed = False

    @property
    def subject(self) -> str:
        """The subject filter being followed."""
        return self._subject

    async def open(self) -> None:
        """Create the consumer and start pulling (done by the first `__anext__` otherwise)."""
        if self._puller is not None:
            return
        if self._domain:  # as angzarr does before starting a consumer
            await create_domain_stream(self._wire, self._cfg, self._domain)
            self._domain = ""
        await self._create(self._resume_from())

    def _resume_from(self) -> Start:
        """Where a (re)created consumer starts: after the last commit seen, or at
        `start` while nothing has been (a consumer from "new" has seen the end)."""
        if self._last_sseq or (self._created and self._start == "new"):
            return self._last_sseq + 1
        return self._start

    async def _create(self, start: Start) -> None:
        stream = self._stream
        self._name = "angzarr-sub-" + uuid.uuid4().hex[:16]
        config = m.ConsumerConfig(
            name=self._name,
            ack_policy="none",
            filter_subject=self._subject,
            inactive_threshold=30 * m.NANOS,
            num_replicas=1,
            mem_storage=True,
            **start_config(start),  # type: ignore[arg-type]
        )
        info = await self._wire.js.consumer_put(stream, config, "create")
        if start == "new":
            self._last_sseq = info.delivered.stream_seq
        self._created = True
        self._dseq = 0
        self._broken = False
        puller = _nats.Puller(self._wire, stream, self._name, self._on_msg, self._on_status)
        await puller.start()
        if self._closed:  # aclose() ran while the consumer was being made
            await puller.stop()
            with contextlib.suppress(StoreError):
                await self._wire.js.consumer_delete(stream, self._name)
            return
        self._puller = puller
        await self._top_up()

    def _on_msg(self, msg: _nats.Pulled) -> None:
        if self._broken or msg.consumer != self._name:
            return
        if msg.consumer_seq != self._dseq + 1:
            self._broken = True
        else:
            self._dseq = msg.consumer_seq
            self._last_sseq = msg.stream_seq
            self._queue.put_nowait(msg)
        self._wake.set()

    def _on_status(self, status: str, description: str) -> None:
        if status not in ("404", "408"):
            log.debug("subscription %s: %s %s", self._name, status, description)
            self._broken = True
        self._wake.set()

    async def _top_up(self) -> None:
        puller = self._puller
        assert puller is not None
        have = puller.outstanding + self._queue.qsize()
        if have <= self._window // 2:
            await puller.pull(self._window - have)

    async def _recreate(self) -> None:
        """A new consumer from after the last commit seen; while the server is
        unreachable, try again (0.1 s doubling to 5 s apart) until it is back
        or the reader is closed."""
        old = self._puller
        self._puller = None
        if old is not None:
            await old.stop()
        with contextlib.suppress(StoreError):
            await self._wire.js.consumer_delete(self._stream, self._name)
        pause = 0.1
        while not self._closed:
            try:
                await self._create(self._resume_from())
                return
            except (StoreTimeout, StoreUnavailable) as exc:
                if self._closed:
                    return  # closed meanwhile (e.g. by Client.close): the iteration ends
                if self._wire.closed:  # no reconnect will come
                    raise self._client_closed() from exc
                log.warning("subscription to %s: %s; retrying in %.1fs", self._subject, exc, pause)
            # Back-off between attempts, cut short by aclose() (which sets _wake).
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
            pause = min(pause * 2, 5.0)

    def __aiter__(self) -> CatchUp:
        return self

    async def __anext__(self) -> Delivery:
        if self._closed:
            raise StopAsyncIteration
        if self._puller is None:
            await self.open()
        while True:
            puller = self._puller
            if self._closed or puller is None:  # closed by another task meanwhile
                raise StopAsyncIteration
            self._wake.clear()
            if not self._queue.empty():
                msg = self._queue.get_nowait()
                await self._top_up()
                try:
                    return decode_delivery(
                        self._cfg.subject_prefix,
                        msg.subject,
                        msg.data,
                        stream_sequence=msg.stream_seq,
                        delivery_count=msg.delivered,
                        headers=msg.headers,
                    )
                except AngzarrESError as exc:
                    # Someone else's message on our subjects: one reader's
                    # poison must not end the subscription (as in core mode).
                    self._skipped(msg.subject, msg.stream_seq, exc)
                    continue
            if self._wire.closed:
                raise self._client_closed()
            if self._broken or puller.stalled():
                await self._recreate()
                continue
            await self._top_up()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), puller.heartbeat)

    def _client_closed(self) -> StoreUnavailable:
        return StoreUnavailable(f"subscription to {self._subject}: the client was closed")

    def _skipped(self, subject: str, stream_seq: int, exc: AngzarrESError) -> None:
        """A message on the filter that is not a commit was passed over."""
        if self._on_skip is not None:
            self._on_skip(subject, stream_seq, exc)
            return
        log.warning(
            "skipping undecodable message on %s (stream sequence %d): %s", subject, stream_seq, exc
        )

    async def aclose(self) -> None:
        """Stop following and delete the consumer."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()  # an iteration waiting in another task ends
        puller, self._puller = self._puller, None
        if puller is not None:
            await puller.stop()
            try:
                await self._wire.js.consumer_delete(self._stream, self._name)
            except StoreError as exc:
                # Its inactive threshold removes it anyway.
                log.warning("could not delete subscription consumer %s: %s", self._name, exc)
