"""What each stream the project owns should be: its configuration as
provisioning makes it, and how an existing stream differs from that (the
differences a plan shows; the settings that would delete events, and the
fix to name). `_provision.py` plans and applies; this module only describes.
"""

from __future__ import annotations

from typing import Any

import msgspec

from angzarr_es._nats import messages as m
from angzarr_es._nats.errors import PROVISION_HINT
from angzarr_es._streams import Streams
from angzarr_es.config import NatsConfig
from angzarr_es.subjects import Subjects, validate_domain

__all__ = [
    "ATOMIC_SERVER",
    "DELETING",
    "IMMUTABLE",
    "correlation_stream_config",
    "deleting_settings",
    "differences",
    "dlq_stream_config",
    "event_stream_config",
    "explain_deleting",
    "kept_as_is",
    "snapshot_stream_config",
    "store_differences",
    "store_stream_config",
]

# Atomic batch publish: 2.12.
ATOMIC_SERVER = (2, 12, 0)
# Settings whose other values would delete or lose events.
IMMUTABLE = ("retention", "storage")
# Settings of the event stream whose other values delete or lose the events
# the store appends: the store will not write to such a stream (`stream_check`)
# and provisioning repairs them (the IMMUTABLE ones block it instead).
DELETING = (
    "max_age",
    "max_msgs",
    "max_bytes",
    "max_msgs_per_subject",
    "discard",
    *IMMUTABLE,
)


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
    if any(key in found for key in IMMUTABLE):
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


def store_stream_config(
    cfg: NatsConfig, server_version: tuple[int, int, int], domain: str = ""
) -> m.StreamConfig:
    """The event stream's configuration as provisioning applies it: in
    per-domain layout, `domain`'s stream (the correlation index's without a
    domain); `Client.stream_config`.

    Raises:
        InvalidDomain: `domain` is not one safe subject token.
    """
    if Streams(cfg).per_domain and not domain:
        return correlation_stream_config(cfg)
    return event_stream_config(cfg, server_version, validate_domain(domain) if domain else "")


def store_differences(
    cfg: NatsConfig, server_version: tuple[int, int, int], name: str, current: dict[str, Any]
) -> dict[str, str] | None:
    """What stream `name` (`current`: its configuration as the server reports
    it) lacks of what the store appends to; None for any other stream."""
    streams = Streams(cfg)
    if not streams.per_domain:
        if name != streams.single:
            return None
        return differences(store_stream_config(cfg, server_version), current)
    domain = streams.domain_of_stream(name, list(current.get("subjects") or []))
    if domain is None:
        return None
    wanted = kept_as_is(store_stream_config(cfg, server_version, domain), current, domain=True)
    return differences(wanted, current)
