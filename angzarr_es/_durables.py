"""Durable consumers: their definition, the plan, and provisioning them.

`plan_consumer()` compares a wanted consumer with the existing one (as the
server reports it) and says what provisioning does: create, update, leave,
or refuse and why. The dry run (`_provision.plan`, `angzarr-es provision
--dry-run`) shows that plan; `provision_consumer()` carries it out for a
projector as it starts and for `Bus.provision`.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol

import msgspec

from angzarr_es._nats import Wire
from angzarr_es._nats import messages as m
from angzarr_es._nats.errors import CONSUMER_ALREADY_EXISTS
from angzarr_es.config import ConsumerSpec, NatsConfig
from angzarr_es.errors import ConsumerConfigError, StoreError
from angzarr_es.subjects import Subjects

__all__ = [
    "PIN_GROUP",
    "PIN_TTL",
    "Action",
    "ConsumerPlan",
    "Limits",
    "configured_consumer_config",
    "durable_config",
    "filter_hint",
    "plan_consumer",
    "provision_consumer",
]

log = logging.getLogger("angzarr_es")

Action = Literal["create", "update", "none", "blocked", "kept"]
"""What provisioning does to a stream or a consumer."""

# Settings a durable consumer cannot change in place, or that would make another
# program's consumer ours: a difference is a conflict.
_FIXED = (
    "filter_subject",
    "ack_policy",
    "replay_policy",
    "deliver_subject",
    "priority_policy",
)
# Settings of a durable consumer an update may change.
_UPDATABLE = ("ack_wait", "max_deliver", "max_ack_pending", "description")
# Partitions: the pinned process keeps its pin by pulling at least this often;
# a standby takes over this long after the pinned one went silent (at once
# after a clean stop, which unpins).
PIN_GROUP = "angzarr"
PIN_TTL = 15.0


class ConsumerPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What provisioning does to one durable consumer (a `[[bus.nats.consumers]]`
    entry, or a projector's)."""

    name: str
    filter: str
    max_deliver: int
    ack_wait: float
    exists: bool
    """Whether the consumer exists already (False: action "create")."""
    action: Action = "create"
    """create it, update it, leave it, or refuse (see `blocker`)."""
    changes: dict[str, str] = {}
    """Setting -> "old -> new" for every setting an update changes."""
    blocker: str = ""
    """Why the existing consumer cannot be brought to its definition (action "blocked")."""


class Limits(Protocol):
    """What a projector's settings and a `[[bus.nats.consumers]]` entry both say."""

    @property
    def name(self) -> str: ...
    @property
    def ack_wait(self) -> float: ...
    @property
    def max_deliver(self) -> int: ...
    @property
    def max_ack_pending(self) -> int: ...


def durable_config(
    of: Limits,
    subject: str,
    *,
    durable: str = "",
    pinned: bool = False,
    start: dict[str, Any] | None = None,
) -> m.ConsumerConfig:
    """A projector's durable consumer as the server should hold it: named
    `durable` (default: `of.name`), on `subject`, from `start` (the delivery
    policy fields; default: the first commit)."""
    return m.ConsumerConfig(
        durable_name=durable or of.name,
        description=f"angzarr_es projector {of.name}",
        ack_policy="explicit",
        replay_policy="instant",
        filter_subject=subject,
        ack_wait=int(of.ack_wait * m.NANOS),
        max_deliver=of.max_deliver,
        max_ack_pending=of.max_ack_pending,
        priority_policy="pinned_client" if pinned else "",
        priority_groups=[PIN_GROUP] if pinned else [],
        priority_timeout=int(PIN_TTL * m.NANOS) if pinned else 0,
        **(start or {"deliver_policy": "all"}),
    )


def configured_consumer_config(spec: ConsumerSpec) -> m.ConsumerConfig:
    """The durable consumer of a `[[bus.nats.consumers]]` entry."""
    return durable_config(spec, spec.filter)


def plan_consumer(
    cfg: NatsConfig, wanted: m.ConsumerConfig, current: dict[str, Any] | None, stream: str = ""
) -> ConsumerPlan:
    """What provisioning does to the durable consumer `wanted` on the event
    stream (`stream`, default the single layout's), given the existing one's
    configuration as the server reports it (None: there is none). Changes nothing; the start position of an
    existing consumer is never a change (it applies only at creation)."""
    planned = ConsumerPlan(
        name=wanted.durable_name,
        filter=wanted.filter_subject,
        max_deliver=wanted.max_deliver,
        ack_wait=wanted.ack_wait / m.NANOS,
        exists=current is not None,
    )
    if current is None:
        return planned
    wanted_raw = msgspec.structs.asdict(wanted)
    conflicts = [
        f"{key}: {current.get(key)!r} (wanted {wanted_raw.get(key) or None!r})"
        for key in _FIXED
        if _unset_none(current.get(key)) != _unset_none(wanted_raw.get(key))
    ]
    if current.get("filter_subjects"):
        conflicts.append(f"filter_subjects: {current['filter_subjects']!r}")
    if conflicts:
        have_filter = str(current.get("filter_subject") or "")
        blocker = (
            f"consumer {wanted.durable_name} on stream {stream or cfg.stream_name} exists with a "
            "conflicting definition: "
            + "; ".join(conflicts)
            + ". "
            + filter_hint(cfg.subject_prefix, have_filter, wanted.filter_subject)
            + "Delete it (nats consumer rm) or choose another projector name."
        )
        return msgspec.structs.replace(planned, action="blocked", blocker=blocker)
    changes = {
        key: f"{current.get(key)!r} -> {wanted_raw.get(key)!r}"
        for key in _UPDATABLE
        if current.get(key) != wanted_raw.get(key)
    }
    action: Action = "update" if changes else "none"
    return msgspec.structs.replace(planned, action=action, changes=changes)


async def provision_consumer(
    wire: Wire, cfg: NatsConfig, wanted: m.ConsumerConfig, stream: str = ""
) -> m.DurableInfo:
    """Create the durable consumer `wanted` on `stream` (default the single
    layout's), or bring an existing one to it (`plan_consumer`). Idempotent.

    Raises:
        ConsumerConfigError: the existing consumer has another filter, ack or
            replay policy, or is a push consumer.
        StoreError: the server refused.
    """
    stream, name = stream or cfg.stream_name, wanted.durable_name
    for _ in range(3):
        info = await wire.js.consumer_info(stream, name)
        planned = plan_consumer(cfg, wanted, None if info is None else info.config, stream)
        if info is None:
            try:
                return await wire.js.consumer_put(stream, wanted, "create")
            except StoreError as exc:
                if exc.err_code == CONSUMER_ALREADY_EXISTS:
                    continue  # another process made it first: compare with theirs
                raise
        if planned.action == "blocked":
            raise ConsumerConfigError(planned.blocker)
        if planned.action == "none":
            return info
        # The start position is the existing consumer's (it cannot change).
        have = info.config
        update = msgspec.structs.replace(
            wanted,
            deliver_policy=str(have.get("deliver_policy") or "all"),
            opt_start_seq=int(have.get("opt_start_seq") or 0),
            opt_start_time=str(have.get("opt_start_time") or ""),
        )
        log.info("updating consumer %s: %s", name, ", ".join(planned.changes))
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
