"""A projector's settings, its counters, and its durable consumer on the server."""

from __future__ import annotations

import logging

import msgspec

from angzarr_es._nats import Wire
from angzarr_es._nats import messages as m
from angzarr_es._nats.errors import CONSUMER_ALREADY_EXISTS
from angzarr_es.bus._delivery import Start, start_config
from angzarr_es.config import NatsConfig
from angzarr_es.errors import ConsumerConfigError, StoreError
from angzarr_es.subjects import Subjects

__all__ = [
    "PIN_GROUP",
    "PIN_TTL",
    "ProjectorSettings",
    "ProjectorStats",
    "filter_hint",
    "provision_consumer",
]

log = logging.getLogger("angzarr_es")

# Partitions: the pinned process keeps its pin by pulling at least this often;
# a standby takes over this long after the pinned one went silent (at once
# after a clean stop, which unpins).
PIN_GROUP = "angzarr"
PIN_TTL = 15.0
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

    def _consumer_config(self) -> m.ConsumerConfig:
        """The durable consumer as the server should hold it."""
        return m.ConsumerConfig(
            durable_name=self.durable,
            description=f"angzarr_es projector {self.name}",
            ack_policy="explicit",
            replay_policy="instant",
            filter_subject=self.subject,
            ack_wait=int(self.ack_wait * m.NANOS),
            max_deliver=self.max_deliver,
            max_ack_pending=self.max_ack_pending,
            priority_policy="pinned_client" if self.partition else "",
            priority_groups=[PIN_GROUP] if self.partition else [],
            priority_timeout=int(PIN_TTL * m.NANOS) if self.partition else 0,
            **start_config(self.start),  # type: ignore[arg-type]
        )


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


# Settings the server cannot change in place, or that would make another
# program's consumer ours: a difference is a conflict.
_FIXED = ("filter_subject", "ack_policy", "replay_policy", "deliver_subject", "priority_policy")
# Settings an update may change.
_UPDATABLE = ("ack_wait", "max_deliver", "max_ack_pending", "description")


async def provision_consumer(
    wire: Wire, cfg: NatsConfig, settings: ProjectorSettings, stream: str = ""
) -> m.DurableInfo:
    """Create the projector's durable consumer, or bring an existing one to its settings.

    Idempotent. The start position applies only at creation.

    Raises:
        ConsumerConfigError: the existing consumer has another filter, ack or
            replay policy, or is a push consumer.
        StoreError: the server refused.
    """
    settings.check()
    stream, name = stream or cfg.stream_name, settings.durable
    wanted = settings._consumer_config()
    for _ in range(3):
        info = await wire.js.consumer_info(stream, name)
        if info is None:
            try:
                return await wire.js.consumer_put(stream, wanted, "create")
            except StoreError as exc:
                if exc.err_code == CONSUMER_ALREADY_EXISTS:
                    continue  # another process made it first: compare with theirs
                raise
        have = info.config
        wanted_raw = msgspec.structs.asdict(wanted)
        conflicts = [
            f"{key}: {have.get(key)!r} (wanted {wanted_raw.get(key) or None!r})"
            for key in _FIXED
            if _unset_none(have.get(key)) != _unset_none(wanted_raw.get(key))
        ]
        if have.get("filter_subjects"):
            conflicts.append(f"filter_subjects: {have['filter_subjects']!r}")
        if conflicts:
            raise ConsumerConfigError(
                f"consumer {name} on stream {stream} exists with a conflicting definition: "
                + "; ".join(conflicts)
                + ". "
                + filter_hint(
                    cfg.subject_prefix, str(have.get("filter_subject") or ""), wanted.filter_subject
                )
                + "Delete it (nats consumer rm) or choose another projector name."
            )
        changed = [k for k in _UPDATABLE if have.get(k) != wanted_raw.get(k)]
        if not changed:
            return info
        # The start position is the existing consumer's (it cannot change).
        update = msgspec.structs.replace(
            wanted,
            deliver_policy=str(have.get("deliver_policy") or "all"),
            opt_start_seq=int(have.get("opt_start_seq") or 0),
            opt_start_time=str(have.get("opt_start_time") or ""),
        )
        log.info("updating consumer %s: %s", name, ", ".join(changed))
        return await wire.js.consumer_put(stream, update, "update")
    raise ConsumerConfigError(f"consumer {name} keeps changing while being provisioned")


def filter_hint(prefix: str, have: str, wanted: str) -> str:
    """How to ask for the filter an existing consumer has, when it is the other
    form of `filters.domain` (the angzarr docs' consumers use `<domain>.>`);
    "" otherwise."""
    root = Subjects(prefix).events_root
    mine, theirs = wanted.removeprefix(root), have.removeprefix(root)
    if not (wanted.startswith(root) and have.startswith(root)) or mine[:-1] != theirs[:-1]:
        return ""
    domain = mine[:-2]
    if mine.endswith(".*") and theirs.endswith(".>"):
        return f"The consumer takes the deep form: use filters.domain({domain!r}, deep=True). "
    if mine.endswith(".>") and theirs.endswith(".*"):
        return f"The consumer takes the shallow form: use filters.domain({domain!r}). "
    return ""


def _unset_none(value: object) -> object:
    """Absent, empty and the server's "none" policy compare equal."""
    return None if value in (None, "", "none") else value
