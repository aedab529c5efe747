"""Replay through an ephemeral ordered pull consumer (`replay = "consumer"`).

The design card's read path, kept as a selectable strategy: an ack-none,
memory-storage, one-replica consumer filtered to the aggregate's subject,
pulled with `no_wait` batches on its own inbox, recreated on a gap, and
deleted when the read ends, even when the reader is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator

import nats.errors
from nats.aio.msg import Msg

from angzarr_es._nats import messages as m
from angzarr_es._nats.api import CONSUMER_NEXT, JetStream, ack_metadata
from angzarr_es._nats.connection import serve_directly, stop_serving
from angzarr_es._nats.errors import status_error, translated
from angzarr_es._nats.mux import Mux
from angzarr_es.errors import AngzarrESError, StoreError

__all__ = ["Replayer"]

log = logging.getLogger("angzarr_es")


class Replayer:
    """Consumer replays of one connection."""

    def __init__(self, mux: Mux, js: JetStream) -> None:
        self._mux = mux
        self._js = js
        self._cleanups: set[asyncio.Future[None]] = set()

    async def replay(
        self, stream: str, subject: str, start: int, batch: int
    ) -> AsyncGenerator[tuple[list[bytes], int, int], None]:
        """Replay `subject` from stream sequence `start` through an ephemeral
        ordered pull consumer (ack none, memory storage, one replica), deleted
        when the iteration ends. Yields (payloads, first, last stream sequence)
        pages.
        """
        next_seq = max(start, 1)
        # Pulled messages keep their stream subject, so they cannot be routed
        # through the shared reply mux: give the replay its own inbox.
        nc = self._mux.nc
        inbox = nc.new_inbox()
        route = self._mux.route(inbox)

        async def on_msg(msg: Msg) -> None:
            route(b"", msg.reply.encode(), msg.data, msg.headers)

        with translated(f"replay {subject}"):
            sub = await nc.subscribe(inbox, cb=on_msg)
        serve_directly(nc, sub, route)
        try:
            async with contextlib.aclosing(
                self._replay_from(stream, subject, next_seq, batch, inbox)
            ) as pages:
                async for item in pages:
                    yield item
        finally:
            stop_serving(nc, sub)
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _replay_from(
        self, stream: str, subject: str, next_seq: int, batch: int, inbox: str
    ) -> AsyncGenerator[tuple[list[bytes], int, int], None]:
        while True:
            name = "angzarr-replay-" + self._mux.nc.new_inbox().rpartition(".")[2]
            create = asyncio.ensure_future(self._create(stream, name, subject, next_seq))
            try:
                await asyncio.shield(create)
                async for page, first, last in self._pull_all(stream, name, batch, inbox):
                    if page is None:
                        break  # a gap: recreate from the last sequence seen
                    next_seq = last + 1
                    yield page, first, last
                else:
                    return
            finally:
                # The create may still be in flight (we were cancelled while
                # waiting for it): let it finish, then delete, in a task a
                # cancellation cannot abort. Otherwise the consumer would live
                # until its inactive threshold.
                cleanup = asyncio.ensure_future(self._discard_consumer(create, stream, name))
                self._cleanups.add(cleanup)
                cleanup.add_done_callback(self._cleanups.discard)
                await asyncio.shield(cleanup)

    async def _discard_consumer(self, create: asyncio.Future[None], stream: str, name: str) -> None:
        # Nothing made, or its fate unknown: the delete below settles it.
        with contextlib.suppress(AngzarrESError, asyncio.CancelledError):
            await create
        await self._delete(stream, name)

    async def _create(self, stream: str, name: str, subject: str, start: int) -> None:
        config = m.ConsumerConfig(
            name=name,
            deliver_policy="by_start_sequence",
            opt_start_seq=start,
            ack_policy="none",
            filter_subject=subject,
            inactive_threshold=30 * m.NANOS,
            num_replicas=1,
            mem_storage=True,
        )
        await self._js.consumer_put(stream, config)

    async def _pull_all(
        self, stream: str, name: str, batch: int, inbox: str
    ) -> AsyncGenerator[tuple[list[bytes] | None, int, int], None]:
        delivered = 0
        body = m.encode(m.PullRequest(batch=batch, no_wait=True))
        subject = CONSUMER_NEXT.format(stream=stream, consumer=name)
        # In a cluster the new consumer lives on the stream leader and news of
        # its subscription reaches our server through routes a moment later;
        # until then a pull gets 503 (no responders). Retry within the timeout.
        deadline = asyncio.get_running_loop().time() + self._mux.timeout
        while True:
            got = await self._mux.gather(subject, body, batch, f"replay via {name}", inbox)
            if got.status == "503" and delivered:
                # The consumer is gone (its inactive threshold passed while the
                # caller worked through a page): go on with a new one.
                yield None, 0, 0
                return
            retry = got.status == "503" and delivered == 0
            if retry and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.005)
                continue
            if got.status not in ("", "404", "408"):
                raise status_error(f"replay via {name}", got.status)
            page: list[bytes] = []
            first = last = pending = 0
            for data, reply, _ in got.replies:
                _, _, sseq, dseq, _, pending = ack_metadata(reply)
                if dseq != delivered + 1:
                    yield None, first, last
                    return
                delivered = dseq
                first = first or sseq
                last = sseq
                page.append(data)
            if page:
                yield page, first, last
            if not page or pending == 0:
                return

    async def _delete(self, stream: str, name: str) -> None:
        try:
            await self._js.consumer_delete(stream, name)
        except StoreError as exc:
            # The inactive threshold removes it anyway; nothing is lost.
            log.warning("could not delete replay consumer %s: %s", name, exc)
