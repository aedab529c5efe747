"""Dead letters: the dead-letter stream, and copying the commits a projector
gives up on into it (`<prefix>.dlq.<domain>`, headers naming the projector,
the error and the delivery count)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec

from angzarr_es import _nats
from angzarr_es._nats import Wire
from angzarr_es._nats import messages as m
from angzarr_es._nats.api import MAX_DELIVERIES_ADVISORY
from angzarr_es._observe import Observer
from angzarr_es.config import NatsConfig
from angzarr_es.errors import StoreError
from angzarr_es.subjects import Subjects

__all__ = [
    "H_DELIVERIES",
    "H_ERROR",
    "H_PROJECTOR",
    "H_STREAM",
    "H_STREAM_SEQ",
    "H_SUBJECT",
    "DeadLetters",
    "one_line",
]

log = logging.getLogger("angzarr_es")

H_PROJECTOR = "Angzarr-Projector"
H_ERROR = "Angzarr-Error"
H_DELIVERIES = "Angzarr-Delivery-Count"
H_SUBJECT = "Angzarr-Subject"
H_STREAM = "Angzarr-Stream"
H_STREAM_SEQ = "Angzarr-Stream-Sequence"
MAX_ERROR_HEADER = 1024


def one_line(exc: BaseException) -> str:
    """An error as one line of text: its type and message."""
    text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


class DeadLetters:
    """Copies the commits one projector gives up on to the dead-letter stream."""

    def __init__(
        self,
        wire: Wire,
        cfg: NatsConfig,
        projector: str,
        durable: str,
        observer: Observer | None = None,
        *,
        stream: str = "",
    ) -> None:
        self._wire = wire
        # The stream the projector's consumer reads (its commits' stream).
        self._stream = stream or cfg.stream_name
        self._cfg = cfg
        self._subjects = Subjects(cfg.subject_prefix)
        self._projector = projector
        self._durable = durable
        self._observer = observer

    async def publish(
        self, subject: str, data: bytes, stream_seq: int, deliveries: int, error: str
    ) -> None:
        """Store the commit `data` (stream sequence `stream_seq`, read from
        `subject`) as a dead letter of its domain.

        Raises:
            StoreError: the dead-letter stream refused it, or the server did not answer.
        """
        stream = self._stream
        headers = {
            H_PROJECTOR: self._projector,
            H_ERROR: error[:MAX_ERROR_HEADER],
            H_DELIVERIES: str(deliveries),
            H_SUBJECT: subject,
            H_STREAM: stream,
            H_STREAM_SEQ: str(stream_seq),
            # Several processes may dead-letter the same commit: keep one.
            m.H_MSG_ID: f"dlq-{stream}-{stream_seq}-{self._durable}",
        }
        target = self._subjects.dead_letter(self._subjects.domain_of(subject))
        if self._observer is not None:
            self._observer.dead_lettered(self._projector)
        ack = await self._wire.publish_commit(
            self._cfg.dlq_stream, target, data, headers, self._wire.timeout
        )
        if ack.error is not None:
            raise ack.error.as_error(f"dead-letter to {target}")

    async def follow_advisories(self, on_dead: Callable[[], None]) -> _nats.CoreSubscription:
        """Dead-letter the commits the server gives up on by itself (a last
        delivery expired unacked: a handler hung or a process died), calling
        `on_dead` after each.

        Raises:
            StoreUnavailable: not connected.
        """

        async def on_advisory(subject: str, data: bytes, headers: dict[str, str]) -> None:
            if await self._from_advisory(subject, data):
                on_dead()

        subject = MAX_DELIVERIES_ADVISORY.format(stream=self._stream, consumer=self._durable)
        return await _nats.core_subscribe(self._wire, subject, on_advisory)

    async def _from_advisory(self, subject: str, data: bytes) -> bool:
        """Dead-letter the commit a max-deliveries advisory names, from the stream."""
        try:
            advisory = _decode_exceeded(data)
        except msgspec.DecodeError:
            log.warning("projector %s: unreadable advisory on %s", self._projector, subject)
            return False
        stream = self._stream
        try:
            message = await self._wire.js.msg_get(stream, m.MsgGetRequest(seq=advisory.stream_seq))
            if message is None:
                log.error(
                    "projector %s: #%d is gone, cannot dead-letter it",
                    self._projector,
                    advisory.stream_seq,
                )
                return False
            await self.publish(
                message.subject,
                message.data,
                advisory.stream_seq,
                advisory.deliveries,
                "MaxDeliveriesExceeded: no ack within ack_wait on the last delivery",
            )
        except StoreError as exc:
            log.error(
                "projector %s: could not dead-letter #%d: %s",
                self._projector,
                advisory.stream_seq,
                exc,
            )
            return False
        return True


class _Exceeded(msgspec.Struct, frozen=True):
    stream_seq: int = 0
    deliveries: int = 0


_decode_exceeded = msgspec.json.Decoder(_Exceeded).decode
