"""Rendering stored events for `show` and `tail`: protobuf as JSON."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from google.protobuf import any_pb2, json_format

from angzarr_es.codec import TYPE_URL_PREFIX, RecordedEvent

_ANY = any_pb2.Any.DESCRIPTOR.full_name


def event_json(ev: RecordedEvent) -> Any:
    """The event as a JSON-ready value (`google.protobuf.json_format`: a dict,
    or a plain value for a well-known type such as `StringValue`).

    An event whose type is not imported here, or that holds an `Any` of such
    a type, keeps its type URL and bytes: `{"@type": ..., "value_base64": ...}`.
    """
    event = ev.event
    if isinstance(event, any_pb2.Any) and ev.type_name != _ANY:
        return _opaque(event.type_url, event.value)  # undecoded
    try:
        return json_format.MessageToDict(event, preserving_proto_field_name=True)
    except (TypeError, ValueError, json_format.Error):
        # An `Any` inside it names a type not imported here.
        return _opaque(TYPE_URL_PREFIX + ev.type_name, event.SerializeToString())


def _opaque(type_url: str, value: bytes) -> dict[str, str]:
    return {"@type": type_url, "value_base64": base64.b64encode(value).decode()}


def record(domain: str, root: str, ev: RecordedEvent, **extra: Any) -> dict[str, Any]:
    """One line of `--json` output."""
    return {
        "domain": domain,
        "id": root,
        "sequence": ev.sequence,
        "created_at": ev.created_at.isoformat().replace("+00:00", "Z"),
        "type": ev.type_name,
        "correlation_id": ev.correlation_id,
        "event": event_json(ev),
        **extra,
    }


def stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
