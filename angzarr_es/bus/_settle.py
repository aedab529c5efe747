"""What becomes of a projector's delivery once its handler is done, or can no
longer run, and the counters that say so (`ProjectorStats`):

    handler returned                  +ACK
    handler raised, deliveries left   -NAK delayed by `backoff` (the aggregate waits)
    handler raised on the last one    a dead letter, then +TERM
    stopped before the last one ran   a dead letter, then +TERM
"""

from __future__ import annotations

import logging
import time

from angzarr_es import _nats
from angzarr_es._nats import Wire
from angzarr_es.bus._deadletter import DeadLetters, one_line
from angzarr_es.bus._ordering import Key
from angzarr_es.bus._settings import ProjectorSettings, ProjectorStats
from angzarr_es.errors import StoreError

__all__ = ["Settler"]

log = logging.getLogger("angzarr_es")


class Settler:
    """Acks, retries and dead letters for one projector, and its counters.

    Uses the settings' `max_deliver`, `backoff` and `ack_wait`, which a
    projector's `reset()` (a new start) leaves as they were.
    """

    def __init__(
        self, wire: Wire, name: str, settings: ProjectorSettings, dead_letters: DeadLetters
    ) -> None:
        self._wire = wire
        self._name = name
        self._settings = settings
        self._dead_letters = dead_letters
        self.handled = self.failed = self.dead = self.skipped = 0

    def stats(self) -> ProjectorStats:
        return ProjectorStats(
            handled=self.handled, failed=self.failed, dead_lettered=self.dead, skipped=self.skipped
        )

    async def succeeded(self, msg: _nats.Pulled | None) -> None:
        """The handler returned: ack `msg` (None: it is no longer ours to ack)."""
        if msg is not None:
            await _nats.reply(self._wire, msg.reply, _nats.ACK)
        self.handled += 1

    async def failed_with(
        self, key: Key, seq: int, msg: _nats.Pulled | None, exc: Exception
    ) -> None:
        """The handler raised: retry `msg` after its backoff delay (the aggregate's
        later commits wait), or dead-letter it after its last delivery."""
        self.failed += 1
        if msg is None:
            return
        s = self._settings
        if msg.delivered >= s.max_deliver:
            log.error(
                "projector %s: %s #%d failed on delivery %d of %d, dead-lettering: %r",
                self._name, msg.subject, seq, msg.delivered, s.max_deliver, exc,
            )  # fmt: skip
            error = one_line(exc)
            await self._dead_letters.publish(
                msg.subject, msg.data, msg.stream_seq, msg.delivered, error
            )
            await _nats.reply(self._wire, msg.reply, _nats.TERM + b" " + error.encode()[:200])
            self.dead += 1
            return
        delay = s.backoff[min(msg.delivered, len(s.backoff)) - 1] if s.backoff else 0.0
        log.warning(
            "projector %s: %s #%d failed on delivery %d, retry in %.3gs: %r",
            self._name, msg.subject, seq, msg.delivered, delay, exc,
        )  # fmt: skip
        key.block(seq, time.monotonic() + delay + s.ack_wait + 1.0)
        await _nats.reply(self._wire, msg.reply, _nats.nak_body(delay))

    async def give_up(self, msg: _nats.Pulled) -> None:
        """The projector stopped before `msg`'s last delivery ran: dead-letter it
        (handing it back would lose it: the server gives up on it at once)."""
        try:
            await self._dead_letters.publish(
                msg.subject,
                msg.data,
                msg.stream_seq,
                msg.delivered,
                "ProjectorStopped: the projector stopped before handling the last delivery",
            )
            await _nats.reply(self._wire, msg.reply, _nats.TERM + b" projector stopped")
        except StoreError as exc:
            log.error(
                "projector %s: could not dead-letter #%d: %s", self._name, msg.stream_seq, exc
            )
            return
        self.dead += 1
