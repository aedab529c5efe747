"""A projector's pull requests on its durable consumer.

Commits come in through `on_msg`; the server's statuses pace the pulls (no
leader during an election) or tell that the consumer was deleted under it.
A partition's consumer pins one process at a time: the pinned one keeps its
pin by pulling at least every `PIN_TTL / 3`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable

from angzarr_es import _nats
from angzarr_es._nats import Wire
from angzarr_es.bus._settings import PIN_GROUP, PIN_TTL, ProjectorSettings
from angzarr_es.config import NatsConfig
from angzarr_es.errors import StoreError

__all__ = ["Feed"]

log = logging.getLogger("angzarr_es")

# Idle heartbeat asked for with every pull.
HEARTBEAT = 1.0
# Pause before pulling again when the consumer has no leader (status 503).
NO_LEADER_PAUSE = 0.1


class Feed:
    """Pulls a projector's commits, up to a number in hand."""

    def __init__(
        self,
        wire: Wire,
        cfg: NatsConfig,
        settings: ProjectorSettings,
        on_msg: Callable[[_nats.Pulled], None],
        wake: Callable[[], None],
        on_gone: Callable[[], None],
        *,
        stream: str = "",
    ) -> None:
        self._wire = wire
        self._cfg = cfg
        self._stream = stream or cfg.stream_name
        self._name = settings.name
        self._durable = settings.durable
        self._pinned = settings.partition is not None
        self._on_msg = on_msg
        self._wake = wake
        self._on_gone = on_gone
        self.puller: _nats.Puller | None = None
        self._pull_after = 0.0
        self._no_leader = 0
        # Set when the server deleted the durable consumer under us; a 409
        # "Consumer Deleted" makes the loop check whether it is so.
        self.gone: StoreError | None = None
        self._check_gone = False
        self._gone_check: asyncio.Task[None] | None = None

    def rearm(self) -> None:
        """Forget that the consumer was deleted (it is about to be provisioned again)."""
        self.gone = None
        self._check_gone = False

    async def start(self) -> None:
        """Start receiving (pulls are sent by `top_up`).

        Raises:
            StoreUnavailable: not connected.
        """
        puller = _nats.Puller(
            self._wire,
            self._stream,
            self._durable,
            self._receive,
            self.on_status,
            expires=PIN_TTL / 3 if self._pinned else 30.0,
            # A pull request lost with its server (or sent while the consumer
            # has no leader) is noticed after two missed heartbeats: keep that short.
            heartbeat=HEARTBEAT,
            group=PIN_GROUP if self._pinned else "",
        )
        await puller.start()
        self.puller = puller

    async def stop(self) -> _nats.Puller | None:
        """Stop receiving; the stopped puller, to unpin once nothing is in flight."""
        puller, self.puller = self.puller, None
        if puller is not None:
            await puller.stop()
        return puller

    async def forget_check(self) -> None:
        """Cancel a pending "was the consumer deleted?" question."""
        if self._gone_check is not None:
            self._gone_check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gone_check

    def check_gone(self) -> None:
        """After a 409 "Consumer Deleted", ask aside whether it is so (the
        in-progress acks must not wait for the answer)."""
        if self._check_gone and self._gone_check is None:
            self._gone_check = asyncio.create_task(self._confirm_gone())

    async def top_up(self, puller: _nats.Puller, in_hand: int, buffer: int, now: float) -> None:
        """Pull so that up to `buffer` commits are in hand or asked for.

        Raises:
            StoreError: the pull was not sent.
        """
        if puller.stalled():
            log.warning("projector %s: no heartbeat, pulling again", self._name)
            puller.forget()
        have = puller.outstanding + in_hand
        if have <= buffer // 2 and now >= self._pull_after:
            await puller.pull(buffer - have)

    def paused_until(self, now: float) -> float:
        """When pulling may resume after a "no leader" status (inf if it may now)."""
        return self._pull_after if now < self._pull_after else math.inf

    def _receive(self, msg: _nats.Pulled) -> None:
        if msg.consumer != self._durable:
            return
        self._no_leader = 0
        self._on_msg(msg)

    def on_status(self, status: str, description: str) -> None:
        """A status from the server in answer to a pull."""
        if status == "503":
            # No responders: the consumer has no leader (an election is under
            # way). Pulling again at once would spin; wait a moment.
            self._pull_after = time.monotonic() + NO_LEADER_PAUSE
            self._no_leader += 1
            if self._no_leader == 1:
                log.warning("projector %s: consumer has no leader, waiting", self._name)
            self._wake()
            return
        self._no_leader = 0
        if status == "409" and "deleted" in description.lower():
            # Sent when the durable is removed (its checkpoint with it), but
            # also when it leaves this server in a cluster: the loop asks.
            self._check_gone = True
        elif status not in ("404", "408", "423"):
            log.warning("projector %s: server says %s %s", self._name, status, description)
        self._wake()

    async def _confirm_gone(self) -> None:
        """If the durable no longer exists, stop pulling and say so
        (re-creating it would replay from `start`)."""
        durable = self._durable
        try:
            if await self._wire.js.consumer_info(self._stream, durable) is not None:
                self._check_gone = False
                return
        except StoreError as exc:  # unknown yet: asked again on a later pass
            log.warning("projector %s: is consumer %s still there? %s", self._name, durable, exc)
            return
        finally:
            self._gone_check = None
            self._wake()
        log.error(
            "projector %s: its consumer %s was deleted on the server; stopped pulling "
            "(provision it again and restart, or reset())",
            self._name,
            durable,
        )
        self.gone = StoreError(
            f"projector {self._name}: consumer {durable} was deleted on the server", code=409
        )
        self._on_gone()
