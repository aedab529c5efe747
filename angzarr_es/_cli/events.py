"""Rendering stored events for `show` and `tail`: protobuf as JSON."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

from angzarr_es.codec import RecordedEvent


def event_json(event: Message) -> dict[str, Any]:
    """The event as a JSON-ready dict; an undecodable `Any` keeps its type URL and bytes."""
    if isinstance(event, any_pb2.Any):
        return {"@type": event.type_url, "value_base64": base64.b64encode(event.value).decode()}
    return json_format.MessageToDict(event, preserving_proto_field_name=True)


def record(domain: str, root: str, ev: RecordedEvent, **extra: Any) -> dict[str, Any]:
    """One line of `--json` output."""
    return {
        "domain": domain,
        "id": root,
        "sequence": ev.sequence,
        "created_at": ev.created_at.isoformat().replace("+00:00", "Z"),
        "type": ev.type_name,
        "correlation_id": ev.correlation_id,
        "event": event_json(ev.event),
        **extra,
    }


def stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
