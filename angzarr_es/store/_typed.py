"""Typed views of an EventBook: one parse decodes a commit's events too.

A stored commit is an `EventBook` whose pages hold each event as an `Any`
(`type_url` = 1, `value` = 2, the event's serialized bytes). Decoding it takes
one parse for the book and then one `FromString` per event, and that per-event
call (a new arena, a new wrapper, the bytes copied out of the book first) was
the largest single cost of a load.

An embedded message is encoded exactly like a `bytes` field holding its
serialization, so the same payload also parses as a book whose `Any.value` is
declared as the event's own message type. For each event class seen on the
read path this module adds such a mirror of `EventBook` to the class's
descriptor pool (under a private package, its field numbers and types copied
from the real descriptors, never written by hand); parsing with it decodes every
event inside the one C parse, and `page.event.value` is then an instance of the
event class itself.

A typed view is only right for a commit whose events all have that type, so the
reader checks each page's `type_url` and falls back to the plain `EventBook`
when one differs (see `_commits.decode_commits`). Every other field is copied
as declared, so the typed parse validates exactly what the plain one does
(UTF-8 of strings included) plus the events' own bytes.

One reading differs, on bytes no protobuf encoder writes: an `Any` carrying
its `value` field twice. As bytes (plain) the last occurrence wins; as a
message (typed) the occurrences are merged. A writer able to store such a
commit could store a commit with the merged content just as well.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.message import Message

from angzarr_es.pb import core_pb2

__all__ = ["parser_for"]

Parser = Callable[[bytes], core_pb2.EventBook]

_PACKAGE = "angzarr_es.internal.typed"
_log = logging.getLogger(__name__)
_Field = descriptor_pb2.FieldDescriptorProto
_parsers: dict[type[Message], Parser | None] = {}
_lock = threading.Lock()


def parser_for(cls: type[Message]) -> Parser | None:
    """`FromString` of the EventBook mirror whose events are typed as `cls`.

    The result reads like an `EventBook` (same field names and numbers), except
    that `page.event.value` is a `cls` message instead of bytes. None when no
    mirror can be built for `cls` (its descriptor pool lacks the EventBook's
    own types, as a pool of its own would): such events are decoded one by one.
    """
    try:
        return _parsers[cls]
    except KeyError:
        pass
    with _lock:
        if cls not in _parsers:
            try:
                _parsers[cls] = _build(cls.DESCRIPTOR)
            except (KeyError, TypeError, ValueError) as exc:
                _log.debug("no typed view for %s: %s", cls.DESCRIPTOR.full_name, exc)
                _parsers[cls] = None
        return _parsers[cls]


def _build(event: Any) -> Parser:
    pool = event.file.pool
    package = f"{_PACKAGE}.{event.full_name}"
    name = f"{package.replace('.', '/')}.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        pool.Add(_mirror_file(event, package, name))
    book: Any = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Book"))
    parse: Parser = book.FromString
    return parse


def _mirror_file(event: Any, package: str, name: str) -> descriptor_pb2.FileDescriptorProto:
    """Book/Page/Any mirroring EventBook/EventPage/Any, with Any.value typed as `event`."""
    book: Any = core_pb2.EventBook.DESCRIPTOR
    page: Any = book.fields_by_name["pages"].message_type
    packed: Any = page.fields_by_name["event"].message_type
    proto = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3")
    deps = {event.file.name}
    typed_any = proto.message_type.add(name="Any")
    _copy(typed_any, packed.fields_by_name["type_url"], deps)
    value = packed.fields_by_name["value"]
    typed_any.field.add(
        name=value.name,
        number=value.number,
        label=_Field.LABEL_OPTIONAL,
        type=_Field.TYPE_MESSAGE,
        type_name="." + event.full_name,
    )
    _mirror(proto, "Page", page, "event", f".{package}.Any", deps)
    _mirror(proto, "Book", book, "pages", f".{package}.Page", deps)
    proto.dependency.extend(sorted(deps - {name}))
    return proto


def _mirror(
    proto: descriptor_pb2.FileDescriptorProto,
    name: str,
    source: Any,
    replaced: str,
    type_name: str,
    deps: set[str],
) -> None:
    """Add message `name` declaring the fields of `source`, with field
    `replaced` typed as `type_name` (a message of this file) instead."""
    target = proto.message_type.add(name=name)
    for field in source.fields:
        if field.name == replaced:
            _local(target, field, type_name)
        else:
            _copy(target, field, deps)


def _copy(target: descriptor_pb2.DescriptorProto, field: Any, deps: set[str]) -> None:
    """Declare `field` in `target` exactly as it is declared in its own message."""
    copied = target.field.add(name=field.name, number=field.number, type=field.type)
    copied.label = _Field.LABEL_REPEATED if _repeated(field) else _Field.LABEL_OPTIONAL
    if field.message_type is not None:
        copied.type_name = "." + field.message_type.full_name
        deps.add(field.message_type.file.name)


def _local(target: descriptor_pb2.DescriptorProto, field: Any, type_name: str) -> None:
    """Declare `field` in `target` with its message type replaced by `type_name`."""
    target.field.add(
        name=field.name,
        number=field.number,
        type=_Field.TYPE_MESSAGE,
        type_name=type_name,
        label=_Field.LABEL_REPEATED if _repeated(field) else _Field.LABEL_OPTIONAL,
    )


def _repeated(field: Any) -> bool:
    return bool(field.is_repeated)
