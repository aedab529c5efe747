"""Provisioning: every stream and consumer angzarr_es owns, planned in one place.

    single layout (the default):
    event stream        <stream_name>       <prefix>.events.>, <prefix>.correlation.>
    per-domain layout (angzarr's bus; _streams.py):
    correlation stream  <base>-correlation  <prefix>.correlation.>
    domain streams      <PREFIX>_<DOMAIN>   <prefix>.events.<domain>.>  (one per domain)
    both:
    snapshot stream     <snapshot_stream>   <prefix>.snapshots.>
    dead-letter stream  <dlq_stream>        <prefix>.dlq.>            (JetStream mode)
    consumers           [[bus.nats.consumers]] durables               (JetStream mode)

`plan()` reads what exists and says what provisioning would do, changing
nothing; `apply()` carries out the stream part of a plan. In per-domain
layout the plan covers every domain stream that exists (made by angzarr or
by us: adopted, i.e. brought to the store's settings in place where they
differ) and those of the domains asked for (created). Durable consumers are
planned and made in `_durables.py`, by the same `plan_consumer()` for this
plan and for a projector's start; in per-domain layout a filter spanning
domains has a consumer in each domain stream, planned one by one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from angzarr_es._durables import Action, ConsumerPlan, configured_consumer_config, plan_consumer
from angzarr_es._nats import Wire
from angzarr_es._nats import messages as m
from angzarr_es._nats.errors import PROVISION_HINT, STREAM_NAME_IN_USE, SUBJECTS_OVERLAP
from angzarr_es._streams import Streams
from angzarr_es.config import NatsConfig
from angzarr_es.errors import (
    ServerTooOld,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    StreamConfigError,
)
from angzarr_es.subjects import Subjects, validate_domain

__all__ = [
    "ConsumerPlan",
    "ProvisionPlan",
    "StreamPlan",
    "apply",
    "correlation_stream_config",
    "create_domain_stream",
    "deleting_settings",
    "differences",
    "dlq_stream_config",
    "ensure_event_stream",
    "event_stream_config",
    "explain_deleting",
    "kept_as_is",
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

Role = Literal[
    "event stream", "domain stream", "correlation stream", "snapshot stream", "dead-letter stream"
]


class StreamPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What provisioning does to one stream."""

    role: Role
    """Which of the project's streams this is."""
    action: Action
    """create it, update it, leave it, or refuse (see `blocker`); "kept": an
    adopted domain stream whose update the server refused, used as it is
    (`blocker` says why; reads fall back to its leader without allow_direct)."""
    config: m.StreamConfig
    """The configuration applied (for an update: with the stream's extra subjects kept)."""
    current: dict[str, Any] | None = None
    """The existing stream's configuration as the server reported it."""
    changes: dict[str, str] = {}
    """Setting -> "old -> new" for every setting that differs."""
    blocker: str = ""
    """Why the stream cannot be changed in place (action "blocked")."""
    domain: str = ""
    """The domain a "domain stream" holds (per-domain layout)."""


class ProvisionPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What provisioning does: the event stream first, then the others.

    `action`, `config`, `current`, `changes` and `blocker` are `streams[0]`'s:
    the event stream in single layout, the correlation stream in per-domain
    layout (whose domain streams are `domains`).
    """

    streams: list[StreamPlan]
    consumers: list[ConsumerPlan] = []

    @property
    def events(self) -> StreamPlan:
        """The first stream's plan (the event stream in single layout)."""
        return self.streams[0]

    @property
    def domains(self) -> list[StreamPlan]:
        """Per-domain layout: the plans of the domain streams, in domain order."""
        return [s for s in self.streams if s.role == "domain stream"]

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


def event_stream_config(
    cfg: NatsConfig, server_version: tuple[int, int, int], domain: str = ""
) -> m.StreamConfig:
    """The event stream as the store needs it (atomic batches where the server
    has them): the single layout's, or in per-domain layout `domain`'s."""
    streams = Streams(cfg)
    if streams.per_domain and domain:
        name, subjects = streams.events(domain), streams.domain_subjects(domain)
    else:
        name, subjects = cfg.stream_name, streams.subjects.events_stream
    return m.StreamConfig(
        name=name,
        subjects=subjects,
        num_replicas=cfg.replicas,
        max_age=int(cfg.max_age * m.NANOS),
        duplicate_window=int(cfg.duplicate_window * m.NANOS),
        allow_direct=True,
        allow_atomic=server_version >= ATOMIC_SERVER,
        deny_delete=True,
    )


def correlation_stream_config(cfg: NatsConfig) -> m.StreamConfig:
    """Per-domain layout: the correlation index's own stream (its entries
    expire with the events when `max_age` is set)."""
    return m.StreamConfig(
        name=cfg.correlation_stream,
        subjects=[Subjects(cfg.subject_prefix).correlation_root + ">"],
        num_replicas=cfg.replicas,
        max_age=int(cfg.max_age * m.NANOS),
        duplicate_window=int(cfg.duplicate_window * m.NANOS),
        allow_direct=True,
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


def kept_as_is(wanted: m.StreamConfig, current: dict[str, Any], *, domain: bool) -> m.StreamConfig:
    """`wanted` with what an existing stream keeps: more replicas than
    configured (fewer copies never makes an event store safer: an operator
    who scaled the stream up, say to R3, keeps it); and, for a domain stream,
    angzarr's `discard` "old" while it has no limit (nothing is ever
    discarded then, so adopting the stream leaves that setting alone)."""
    have = int(current.get("num_replicas", 1) or 1)
    if have > wanted.num_replicas:
        wanted = msgspec.structs.replace(wanted, num_replicas=have)
    if domain and current.get("discard") == "old" and not _limited(current):
        wanted = msgspec.structs.replace(wanted, discard="old")
    return wanted


def deleting_settings(
    cfg: NatsConfig, current: dict[str, Any], server_version: tuple[int, int, int], domain: str = ""
) -> dict[str, str]:
    """The event stream's settings (of `current`, as the server reports them)
    that can delete or lose events the configuration keeps, as `differences`
    says them ('have -> wanted'); empty if none. A configured `max_age` is
    the operator's choice: a stream that expires events is then no surprise.

    A domain stream (per-domain layout) is angzarr's as much as ours, and
    angzarr makes it with `discard` "old" and no limit: with no limit nothing
    is ever discarded, so that alone does not count.
    """
    wanted = event_stream_config(cfg, server_version, domain)
    changes = differences(wanted, current)
    found = {key: changes[key] for key in DELETING if key in changes}
    if wanted.max_age:
        found.pop("max_age", None)
    if domain and "discard" in found and not _limited(current):
        del found["discard"]
    return found


def _limited(current: dict[str, Any]) -> bool:
    """Whether a stream has any limit that makes its `discard` policy act."""
    unlimited = {"max_msgs": -1, "max_bytes": -1, "max_msgs_per_subject": -1, "max_age": 0}
    return any(current.get(key, none) not in (none, 0, None) for key, none in unlimited.items())


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


async def plan(
    wire: Wire, cfg: NatsConfig, *, bus: bool = False, domains: Sequence[str] = ()
) -> ProvisionPlan:
    """What provisioning would do, changing nothing: the event and snapshot
    streams, and with `bus` (in JetStream mode) the dead-letter stream and
    the configured consumers. In per-domain layout: the correlation and
    snapshot streams, every existing domain stream (adopted) and those of
    `domains` (created if missing).

    Raises:
        InvalidDomain: a name in `domains` is not one safe subject token.
        ServerTooOld, StoreUnavailable, StoreError
    """
    wanted_domains = [validate_domain(d) for d in domains]
    check_server(wire)
    version = wire.server_version
    layout = Streams(cfg)
    if layout.per_domain:
        streams = [
            await _plan_events(wire, correlation_stream_config(cfg), role="correlation stream"),
            await _plan_settings(wire, "snapshot stream", snapshot_stream_config(cfg)),
        ]
        found = dict(await domain_streams(wire, layout))
        for domain in sorted({*found, *wanted_domains}):
            wanted = event_stream_config(cfg, version, domain)
            streams.append(await _plan_events(wire, wanted, role="domain stream", domain=domain))
    else:
        streams = [
            await _plan_events(wire, event_stream_config(cfg, version)),
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
        found_streams = [s.config.name for s in streams if s.role == "domain stream"]
        for spec in cfg.consumers:
            durable = configured_consumer_config(spec)
            if layout.per_domain:
                # A filter spanning domains has a consumer in each domain stream.
                home = layout.domain_of_filter(spec.filter)
                homes = [layout.events(home)] if home else found_streams
                for stream in homes:
                    info = await wire.js.consumer_info(stream, spec.name)
                    current = None if info is None else info.config
                    consumers.append(plan_consumer(cfg, durable, current, stream))
                if not homes:
                    consumers.append(plan_consumer(cfg, durable, None))
                continue
            info = await wire.js.consumer_info(cfg.stream_name, spec.name) if events_exist else None
            current = None if info is None else info.config
            consumers.append(plan_consumer(cfg, durable, current))
    return ProvisionPlan(streams=streams, consumers=consumers)


async def domain_streams(wire: Wire, layout: Streams) -> list[tuple[str, str]]:
    """Per-domain layout: (domain, stream) of every domain stream on the
    server (by angzarr or by us), in domain order: one STREAM.LIST request
    per 256 streams of the account.

    Raises:
        StoreTimeout, StoreUnavailable, StoreError
    """
    out: list[tuple[str, str]] = []
    for info in await wire.js.stream_list():
        config = info.config or {}
        name = str(config.get("name") or "")
        domain = layout.domain_of_stream(name, list(config.get("subjects") or []))
        if domain is not None:
            out.append((domain, name))
    return sorted(out)


async def create_domain_stream(wire: Wire, cfg: NatsConfig, domain: str) -> None:
    """Per-domain layout: create `domain`'s stream with the store's settings
    (on its first append); made meanwhile by someone else (angzarr's
    get-or-create, another client) is fine.

    Raises:
        StreamConfigError: other streams capture the domain's subjects.
        StoreError: the server refused.
    """
    wanted = event_stream_config(cfg, wire.server_version, domain)
    what = f"stream {wanted.name} of domain {domain}"
    try:
        await wire.js.stream_put(wanted, create=True, what=what)
    except StoreError as exc:
        if exc.err_code == STREAM_NAME_IN_USE:
            return
        if exc.err_code == SUBJECTS_OVERLAP:
            raise StreamConfigError(await _overlap(wire, wanted, per_domain=True)) from exc
        raise
    log.info("created %s", what)


async def _overlap(wire: Wire, wanted: m.StreamConfig, *, per_domain: bool) -> str:
    """Why `wanted` cannot be created: the streams that capture its subjects,
    and the layout setting that shares them ("" if none does)."""
    found: list[str] = []
    for subject in wanted.subjects:
        for name in await wire.js.stream_names(subject):
            if name != wanted.name and name not in found:
                found.append(name)
    if not found:
        return ""
    text = (
        f"stream {wanted.name} cannot be created: its subjects {wanted.subjects} overlap "
        f"those of stream(s) {', '.join(sorted(found))}. "
    )
    if per_domain:
        return text + (
            "Another layout holds these events: with one stream over all domains set "
            'bus.nats.stream_layout = "single" (and stream_name to it).'
        )
    # angzarr's per-domain streams are named <PREFIX>_<DOMAIN>.
    angzarr = wanted.subjects[0].partition(".")[0].upper() + "_"
    if any(name.startswith(angzarr) for name in found):
        return text + (
            "That is angzarr's per-domain layout (one stream <PREFIX>_<DOMAIN> per domain): "
            'set bus.nats.stream_layout = "per-domain" to share its streams.'
        )
    return text + (
        "Delete that stream, or give this store another bus.nats.subject_prefix, "
        "so that one stream holds each subject."
    )


def replicas_blocker(replicas: int) -> str:
    """Why `replicas` copies cannot be had from a server that is not clustered, and the fix."""
    return (
        f"bus.nats.replicas = {replicas} needs a JetStream cluster of at least {replicas} "
        "servers, and the connected nats-server is not clustered: set "
        "bus.nats.replicas = 1, or connect to a cluster"
    )


async def _plan_events(
    wire: Wire, wanted: m.StreamConfig, *, role: Role = "event stream", domain: str = ""
) -> StreamPlan:
    """A stream the store appends to, brought to `wanted` by the event
    stream's rules (an existing domain stream of angzarr's is adopted so)."""
    name = wanted.name
    current = await wire.js.stream_settings(name, "stream")
    if current is None:
        blocker = await _overlap(wire, wanted, per_domain=role != "event stream")
        action: Action = "blocked" if blocker else "create"
        return StreamPlan(role=role, action=action, config=wanted, blocker=blocker, domain=domain)
    wanted = kept_as_is(wanted, current, domain=bool(domain))
    changes = differences(wanted, current)
    if not changes:
        return StreamPlan(role=role, action="none", config=wanted, current=current, domain=domain)
    for key in _IMMUTABLE:
        if key in changes:
            return StreamPlan(
                role=role,
                domain=domain,
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
        role=role,
        action="update",
        config=merged,
        current=current,
        changes=changes,
        domain=domain,
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


async def apply(wire: Wire, planned: ProvisionPlan) -> ProvisionPlan:
    """Create or update the streams of `planned`, in order; returns the plan as
    carried out.

    An adopted domain stream (per-domain layout) whose update the server
    refuses (no permission, a setting that server cannot change) is used as
    it is: a warning, and action "kept" in the returned plan.

    Raises:
        StreamConfigError: a stream cannot be changed in place, or its
            subjects belong to other streams (nothing after it is changed).
        StoreError: the server refused.
    """
    done: list[StreamPlan] = []
    for stream in planned.streams:
        name = stream.config.name
        if stream.action == "blocked":
            raise StreamConfigError(stream.blocker)
        if stream.action == "create":
            try:
                await wire.js.stream_put(stream.config, create=True, what=f"{stream.role} {name}")
            except StoreError as exc:
                # Made since the plan looked: say whose subjects they are.
                if exc.err_code != SUBJECTS_OVERLAP:
                    raise
                per_domain = stream.role != "event stream"
                why = await _overlap(wire, stream.config, per_domain=per_domain)
                raise StreamConfigError(why or str(exc)) from exc
            log.info("created stream %s (%s)", name, stream.role)
        elif stream.action == "update":
            changed = ", ".join(f"{k}: {v}" for k, v in stream.changes.items())
            log.warning("updating stream %s (%s): %s", name, stream.role, changed)
            try:
                await wire.js.stream_put(stream.config, create=False, what=f"{stream.role} {name}")
            except StoreError as exc:
                if stream.role != "domain stream" or isinstance(
                    exc, StoreUnavailable | StoreTimeout
                ):
                    raise
                log.warning("stream %s is used as it is: %s", name, exc)
                stream = msgspec.structs.replace(stream, action="kept", blocker=str(exc))
        done.append(stream)
    return msgspec.structs.replace(planned, streams=done)


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
