"""Provisioning: every stream and consumer angzarr_es owns, planned in one place.

    event stream        <stream_name>       <prefix>.events.>, <prefix>.correlation.>
    snapshot stream     <snapshot_stream>   <prefix>.snapshots.>
    dead-letter stream  <dlq_stream>        <prefix>.dlq.>            (JetStream mode)
    consumers           [[bus.nats.consumers]] durables               (JetStream mode)

`plan()` reads what exists and says what provisioning would do, changing
nothing; `apply()` carries out the stream part of a plan. Durable
consumers are planned and made in `_durables.py`, by the same
`plan_consumer()` for this plan and for a projector's start.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import msgspec

from angzarr_es._durables import Action, ConsumerPlan, configured_consumer_config, plan_consumer
from angzarr_es._nats import Wire
from angzarr_es._nats import messages as m
from angzarr_es._nats.errors import PROVISION_HINT
from angzarr_es.config import NatsConfig
from angzarr_es.errors import ServerTooOld, StoreUnavailable, StreamConfigError
from angzarr_es.subjects import Subjects

__all__ = [
    "ConsumerPlan",
    "ProvisionPlan",
    "StreamPlan",
    "apply",
    "deleting_settings",
    "differences",
    "dlq_stream_config",
    "ensure_event_stream",
    "event_stream_config",
    "explain_deleting",
    "plan",
    "snapshot_stream_config",
]

log = logging.getLogger("angzarr_es")

# Batch Direct Get with no_hdr and the `-Subject` expected header: 2.11.
MIN_SERVER = (2, 11, 0)
ATOMIC_SERVER = (2, 12, 0)
# Settings whose other values would delete or lose events.
_IMMUTABLE = ("retention", "storage")
# Settings of the event stream whose other values delete or lose the events
# the store appends: the store will not write to such a stream (`stream_check`)
# and provisioning repairs them (the _IMMUTABLE ones block it instead).
DELETING = (
    "max_age",
    "max_msgs",
    "max_bytes",
    "max_msgs_per_subject",
    "discard",
    *_IMMUTABLE,
)

Role = Literal["event stream", "snapshot stream", "dead-letter stream"]


class StreamPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What provisioning does to one stream."""

    role: Role
    """Which of the project's streams this is."""
    action: Action
    """create it, update it, leave it, or refuse (see `blocker`)."""
    config: m.StreamConfig
    """The configuration applied (for an update: with the stream's extra subjects kept)."""
    current: dict[str, Any] | None = None
    """The existing stream's configuration as the server reported it."""
    changes: dict[str, str] = {}
    """Setting -> "old -> new" for every setting that differs."""
    blocker: str = ""
    """Why the stream cannot be changed in place (action "blocked")."""


class ProvisionPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What provisioning does: the event stream first, then the others.

    `action`, `config`, `current`, `changes` and `blocker` are the event
    stream's (`streams[0]`).
    """

    streams: list[StreamPlan]
    consumers: list[ConsumerPlan] = []

    @property
    def events(self) -> StreamPlan:
        """The event stream's plan."""
        return self.streams[0]

    @property
    def action(self) -> Action:
        return self.events.action

    @property
    def config(self) -> m.StreamConfig:
        return self.events.config

    @property
    def current(self) -> dict[str, Any] | None:
        return self.events.current

    @property
    def changes(self) -> dict[str, str]:
        return self.events.changes

    @property
    def blocker(self) -> str:
        return self.events.blocker

    def role(self, role: Role) -> StreamPlan | None:
        """The plan of the stream with `role`, if this plan covers it."""
        return next((s for s in self.streams if s.role == role), None)


# -- what each stream should be -------------------------------------------------


def event_stream_config(cfg: NatsConfig, server_version: tuple[int, int, int]) -> m.StreamConfig:
    """The event stream as the store needs it (atomic batches where the server has them)."""
    return m.StreamConfig(
        name=cfg.stream_name,
        subjects=Subjects(cfg.subject_prefix).events_stream,
        num_replicas=cfg.replicas,
        max_age=int(cfg.max_age * m.NANOS),
        duplicate_window=int(cfg.duplicate_window * m.NANOS),
        allow_direct=True,
        allow_atomic=server_version >= ATOMIC_SERVER,
        deny_delete=True,
    )


def snapshot_stream_config(cfg: NatsConfig) -> m.StreamConfig:
    """The snapshot stream: the latest snapshot per aggregate plus `snapshot_history`."""
    return m.StreamConfig(
        name=cfg.snapshot_stream,
        subjects=Subjects(cfg.subject_prefix).snapshots_stream,
        num_replicas=cfg.replicas,
        max_msgs_per_subject=1 + cfg.snapshot_history,
        discard="old",
        duplicate_window=int(cfg.duplicate_window * m.NANOS),
        allow_direct=True,
    )


def dlq_stream_config(cfg: NatsConfig) -> m.StreamConfig:
    """The dead-letter stream `<dlq_stream>` on `<prefix>.dlq.>`."""
    return m.StreamConfig(
        name=cfg.dlq_stream,
        subjects=[Subjects(cfg.subject_prefix).dlq_stream],
        num_replicas=cfg.replicas,
        duplicate_window=int(cfg.duplicate_window * m.NANOS),
        allow_direct=True,
    )


def differences(wanted: m.StreamConfig, current: dict[str, Any]) -> dict[str, str]:
    """Settings of `wanted` the existing stream does not have, as 'old -> new'."""
    out: dict[str, str] = {}
    for key, value in msgspec.structs.asdict(wanted).items():
        if key == "subjects":
            missing = [s for s in value if s not in current.get("subjects", [])]
            if missing:
                out[key] = f"add {missing}"
            continue
        have = current.get(key, False if isinstance(value, bool) else None)
        if have != value:
            out[key] = f"{have!r} -> {value!r}"
    return out


def deleting_settings(
    cfg: NatsConfig, current: dict[str, Any], server_version: tuple[int, int, int]
) -> dict[str, str]:
    """The event stream's settings (of `current`, as the server reports them)
    that can delete or lose events the configuration keeps, as `differences`
    says them ('have -> wanted'); empty if none. A configured `max_age` is
    the operator's choice: a stream that expires events is then no surprise.
    """
    wanted = event_stream_config(cfg, server_version)
    changes = differences(wanted, current)
    found = {key: changes[key] for key in DELETING if key in changes}
    if wanted.max_age:
        found.pop("max_age", None)
    return found


def explain_deleting(name: str, found: dict[str, str], current: dict[str, Any]) -> str:
    """What a stream with `deleting_settings` does to events, and the fix."""
    what = {
        "max_age": f"events older than {int(current.get('max_age') or 0) / m.NANOS:g} s "
        "are deleted",
        "max_msgs": f"only the newest {current.get('max_msgs')} messages are kept",
        "max_bytes": f"only the newest {current.get('max_bytes')} bytes are kept",
        "max_msgs_per_subject": f"only the newest {current.get('max_msgs_per_subject')} "
        "commits of each aggregate are kept",
        "discard": "the oldest messages are deleted when a limit is reached",
        "retention": "messages are deleted once consumed",
        "storage": "events are lost when the server restarts",
    }
    said = "; ".join(f"{key}: {change} ({what[key]})" for key, change in found.items())
    if any(key in found for key in _IMMUTABLE):
        fix = (
            "That cannot be changed in place: move the events to a new stream or pick "
            "another bus.nats.stream_name"
        )
    else:
        fix = f"Run {PROVISION_HINT} to make it keep every event"
    return (
        f"stream {name} can delete the events the store appends: {said}. {fix}, or set "
        'bus.nats.stream_check = "warn" to append anyway.'
    )


# -- planning --------------------------------------------------------------------


def check_server(wire: Wire) -> None:
    """Raise if the connected server cannot host the store.

    Raises:
        ServerTooOld: the server lacks batch Direct Get (needs >= 2.11).
        StoreUnavailable: JetStream is not enabled.
    """
    version = wire.server_version
    if version < MIN_SERVER:
        raise ServerTooOld(
            f"nats-server {'.'.join(map(str, version))} is too old: angzarr_es needs "
            f"{'.'.join(map(str, MIN_SERVER))} or newer (batch Direct Get with no_hdr)"
        )
    if not wire.jetstream_enabled:
        raise StoreUnavailable(
            "the NATS server does not have JetStream enabled (start it with -js)"
        )


async def plan(wire: Wire, cfg: NatsConfig, *, bus: bool = False) -> ProvisionPlan:
    """What provisioning would do, changing nothing: the event and snapshot
    streams, and with `bus` (in JetStream mode) the dead-letter stream and
    the configured consumers.

    Raises:
        ServerTooOld, StoreUnavailable, StoreError
    """
    check_server(wire)
    streams = [
        await _plan_events(wire, event_stream_config(cfg, wire.server_version)),
        await _plan_settings(wire, "snapshot stream", snapshot_stream_config(cfg)),
    ]
    events = streams[0]
    if cfg.replicas > 1 and not wire.clustered and events.action != "blocked":
        # The server would refuse every stream with err_code 10074; say so
        # before changing anything, and what to do about it.
        streams[0] = msgspec.structs.replace(
            events, action="blocked", blocker=replicas_blocker(cfg.replicas)
        )
    consumers: list[ConsumerPlan] = []
    if bus and cfg.jetstream:
        streams.append(await _plan_dead_letters(wire, dlq_stream_config(cfg)))
        events_exist = streams[0].action != "create"
        for spec in cfg.consumers:
            info = await wire.js.consumer_info(cfg.stream_name, spec.name) if events_exist else None
            current = None if info is None else info.config
            consumers.append(plan_consumer(cfg, configured_consumer_config(spec), current))
    return ProvisionPlan(streams=streams, consumers=consumers)


def replicas_blocker(replicas: int) -> str:
    """Why `replicas` copies cannot be had from a server that is not clustered, and the fix."""
    return (
        f"bus.nats.replicas = {replicas} needs a JetStream cluster of at least {replicas} "
        "servers, and the connected nats-server is not clustered: set "
        "bus.nats.replicas = 1, or connect to a cluster"
    )


async def _plan_events(wire: Wire, wanted: m.StreamConfig) -> StreamPlan:
    name = wanted.name
    current = await wire.js.stream_settings(name, "stream")
    if current is None:
        return StreamPlan(role="event stream", action="create", config=wanted)
    have = int(current.get("num_replicas", 1) or 1)
    if have > wanted.num_replicas:
        # Fewer copies never makes an event store safer: an operator who
        # scaled the stream up (say to R3) keeps it, whatever the default.
        wanted = msgspec.structs.replace(wanted, num_replicas=have)
    changes = differences(wanted, current)
    if not changes:
        return StreamPlan(role="event stream", action="none", config=wanted, current=current)
    for key in _IMMUTABLE:
        if key in changes:
            return StreamPlan(
                role="event stream",
                action="blocked",
                config=wanted,
                current=current,
                changes=changes,
                blocker=(
                    f"stream {name} exists with {key}={current.get(key)!r}; the event store "
                    f"needs {key}={getattr(wanted, key)!r} and it cannot be changed in "
                    "place. Move the events to a new stream or pick another "
                    "bus.nats.stream_name."
                ),
            )
    # Keep the stream's other subjects, minus those our wildcard now covers
    # (the server refuses overlapping subjects within one stream).
    ours = wanted.subjects[0].removesuffix(">")
    kept = [s for s in current.get("subjects", []) if not s.startswith(ours)]
    subjects = list(dict.fromkeys([*kept, *wanted.subjects]))
    merged = msgspec.structs.replace(wanted, subjects=subjects)
    return StreamPlan(
        role="event stream", action="update", config=merged, current=current, changes=changes
    )


async def _plan_settings(wire: Wire, role: Role, wanted: m.StreamConfig) -> StreamPlan:
    """A stream brought to `wanted` whole (the snapshot stream)."""
    current = await wire.js.stream_settings(wanted.name, role)
    if current is None:
        return StreamPlan(role=role, action="create", config=wanted)
    changes = differences(wanted, current)
    action: Action = "update" if changes else "none"
    return StreamPlan(role=role, action=action, config=wanted, current=current, changes=changes)


async def _plan_dead_letters(wire: Wire, wanted: m.StreamConfig) -> StreamPlan:
    """The dead-letter stream: created, or given its subject; its other settings
    are the operator's (retention of dead letters is a policy choice)."""
    role: Role = "dead-letter stream"
    current = await wire.js.stream_settings(wanted.name, role)
    if current is None:
        return StreamPlan(role=role, action="create", config=wanted)
    subjects = list(current.get("subjects", []))
    if wanted.subjects[0] in subjects:
        return StreamPlan(role=role, action="none", config=wanted, current=current)
    config = msgspec.structs.replace(wanted, subjects=[*subjects, *wanted.subjects])
    changes = {"subjects": f"add {wanted.subjects}"}
    return StreamPlan(role=role, action="update", config=config, current=current, changes=changes)


# -- carrying it out ---------------------------------------------------------------


async def apply(wire: Wire, planned: ProvisionPlan) -> None:
    """Create or update the streams of `planned`, in order.

    Raises:
        StreamConfigError: a stream cannot be changed in place (nothing after
            it is changed).
        StoreError: the server refused.
    """
    for stream in planned.streams:
        name = stream.config.name
        if stream.action == "blocked":
            raise StreamConfigError(stream.blocker)
        if stream.action == "create":
            await wire.js.stream_put(stream.config, create=True, what=f"{stream.role} {name}")
            log.info("created stream %s (%s)", name, stream.role)
        elif stream.action == "update":
            changed = ", ".join(f"{k}: {v}" for k, v in stream.changes.items())
            log.warning("updating stream %s (%s): %s", name, stream.role, changed)
            await wire.js.stream_put(stream.config, create=False, what=f"{stream.role} {name}")


async def ensure_event_stream(wire: Wire, wanted: m.StreamConfig) -> None:
    """Create the stream `wanted`, or bring an existing one up to it by the event
    stream's rules: settings that would delete events are repaired, retention
    and storage are never changed in place, replicas are never lowered.

    Raises:
        ServerTooOld, StoreUnavailable: the server cannot host it.
        StreamConfigError: the existing stream cannot be changed in place.
        StoreError: the server refused.
    """
    check_server(wire)
    await apply(wire, ProvisionPlan(streams=[await _plan_events(wire, wanted)]))


async def ensure_dead_letters(wire: Wire, cfg: NatsConfig) -> None:
    """Create the dead-letter stream if it is missing, or add `<prefix>.dlq.>` to
    the subjects of an existing one (a projector does this as it starts).

    Raises:
        StoreError: the server refused.
    """
    await apply(
        wire, ProvisionPlan(streams=[await _plan_dead_letters(wire, dlq_stream_config(cfg))])
    )
