"""A projector's settings, its counters, and its durable consumer on the server."""

from __future__ import annotations

import msgspec

from angzarr_es._durables import PIN_GROUP, PIN_TTL, durable_config
from angzarr_es._durables import provision_consumer as _provision_consumer
from angzarr_es._nats import Wire
from angzarr_es._nats import messages as m
from angzarr_es.bus._delivery import Start, start_config
from angzarr_es.config import NatsConfig

__all__ = [
    "PIN_GROUP",
    "PIN_TTL",
    "ProjectorSettings",
    "ProjectorStats",
    "consumer_config",
    "provision_consumer",
]

# nats-server's limit on a consumer's name (JSMaxNameLen).
MAX_NAME = 255


class ProjectorSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What defines a projector's durable consumer and its dispatch."""

    name: str
    """Durable consumer name (one token of [A-Za-z0-9_-])."""
    subject: str
    """Subject filter."""
    max_deliver: int = 5
    ack_wait: float = 30.0
    backoff: tuple[float, ...] = (1.0, 5.0, 15.0, 30.0)
    max_ack_pending: int = 1000
    concurrency: int = 1
    start: Start = "all"
    partition: tuple[int, int] | None = None
    buffer: int = 0
    """Commits held in hand at most (0: max(4 * concurrency, 64))."""

    @property
    def durable(self) -> str:
        """The consumer's name on the server."""
        if self.partition is None:
            return self.name
        index, count = self.partition
        return f"{self.name}-{index}of{count}"

    def check(self) -> None:
        """Raises ValueError on settings the server or the dispatcher cannot honour."""
        if not self.name or not all(c.isascii() and (c.isalnum() or c in "_-") for c in self.name):
            raise ValueError(f"projector name {self.name!r} must be [A-Za-z0-9_-]")
        if len(self.durable) > MAX_NAME:
            raise ValueError(
                f"projector name must be at most {MAX_NAME} characters (with its partition)"
            )
        for key in ("concurrency", "max_deliver", "max_ack_pending"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{key} must be an int, got {value!r}")
        if self.max_deliver < 1:
            raise ValueError("max_deliver must be >= 1")
        if self.ack_wait <= 0:
            raise ValueError("ack_wait must be > 0 seconds")
        if any(b < 0 for b in self.backoff):
            raise ValueError("backoff delays must be >= 0 seconds")
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.partition is not None:
            index, count = self.partition
            if count < 1 or not 0 <= index < count:
                raise ValueError(
                    f"partition must be (index, count) with 0 <= index < count: {self.partition}"
                )
        start_config(self.start)


class ProjectorStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counters since the projector object was made."""

    handled: int
    """Commits whose handler returned (acked)."""
    failed: int
    """Handler calls that raised (each is retried or dead-lettered)."""
    dead_lettered: int
    skipped: int
    """Commits of other partitions, and messages outside `<prefix>.events.`
    (correlation index entries under a filter such as `<prefix>.>`), acked
    unhandled."""


async def provision_consumer(
    wire: Wire, cfg: NatsConfig, settings: ProjectorSettings, stream: str = ""
) -> m.DurableInfo:
    """Create the projector's durable consumer, or bring an existing one to its
    settings (`_durables.plan_consumer` says how). Idempotent. The start
    position applies only at creation.

    Raises:
        ValueError, TypeError: settings the server or the dispatcher cannot honour.
        ConsumerConfigError: the existing consumer has another filter, ack or
            replay policy, or is a push consumer.
        StoreError: the server refused.
    """
    settings.check()
    return await _provision_consumer(wire, cfg, consumer_config(settings), stream)


def consumer_config(settings: ProjectorSettings) -> m.ConsumerConfig:
    """The projector's durable consumer as the server should hold it."""
    return durable_config(
        settings,
        settings.subject,
        durable=settings.durable,
        pinned=settings.partition is not None,
        start=start_config(settings.start),
    )
