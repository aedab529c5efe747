"""Views of an EventBook for the read path: one parse decodes a commit's events
too, and a page that holds no committed event shows as one without an event.

A stored commit is an `EventBook` whose pages hold each event as an `Any`
(`type_url` = 1, `value` = 2, the event's serialized bytes). Decoding it takes
one parse for the book and then one `FromString` per event, and that per-event
call (a new arena, a new wrapper, the bytes copied out of the book first) was
the largest single cost of a load.

An embedded message is encoded exactly like a `bytes` field holding its
serialization, so the same payload also parses as a book whose `Any.value` is
declared as the event's own message type. For each event class seen on the
read path this module adds such a mirror of `EventBook` to the class's
descriptor pool (under a private package, its messages copied from the real
descriptors, never written by hand); parsing with it decodes every event inside
the one C parse, and `page.event.value` is then an instance of the event class
itself.

A typed view is only right for a commit whose events all have that type, so the
reader checks each page's `type_url` and falls back to the plain view when one
differs (see `_commits.decode_commits`). Every other field is copied as
declared, so the typed parse validates exactly what the plain one does (UTF-8
of strings included) plus the events' own bytes.

Pending pages. angzarr's two-phase commit marks a page pending with
`no_commit` (field 6), outside the page's `payload` oneof. Reading that flag on
every page would cost each event of a load an attribute read, so both views
(the typed ones and the plain one, `plain_parser`) declare `no_commit` as a
third member of the `payload` oneof: a page carrying it reads as a page whose
`event` is empty, exactly like a claim-check page (`external`) or a page with
no payload, and the reader, which already compares every page's `type_url`,
sends the commit to the careful path (`_codec.extend_irregular` over the real
`EventBook`). This relies on the flag following the event on the wire, as every
protobuf encoder writes fields (in field-number order; prost sorts by tag too).

Two readings differ from the real `EventBook`'s, on bytes no protobuf encoder
writes: an `Any` carrying its `value` field twice (as bytes the last
occurrence wins; as a message, in a typed view, the occurrences are merged),
and a page whose `no_commit` comes *before* its event on the wire (the views
read that page as committed). A writer able to store such bytes could store a
committed event just as well.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, message_factory
from google.protobuf.message import Message

from angzarr_es.pb import core_pb2

__all__ = ["parser_for", "plain_parser"]

Parser = Callable[[bytes], core_pb2.EventBook]

_PACKAGE = "angzarr_es.internal.typed"
_PLAIN_PACKAGE = "angzarr_es.internal.read"
_log = logging.getLogger(__name__)
_Field = descriptor_pb2.FieldDescriptorProto
_parsers: dict[type[Message], Parser | None] = {}
_lock = threading.Lock()


def parser_for(cls: type[Message]) -> Parser | None:
    """`FromString` of the EventBook mirror whose events are typed as `cls`.

    The result reads like an `EventBook` (same field names and numbers), except
    that `page.event.value` is a `cls` message instead of bytes, and a pending
    page has no `event`. None when no mirror can be built for `cls` (its
    descriptor pool lacks the EventBook's own types, as a pool of its own
    would): such events are decoded one by one.
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


def plain_parser() -> Parser:
    """`FromString` of the EventBook mirror the read path parses with when it
    has no type to guess: an `EventBook` whose pending pages have no `event`."""
    with _lock:
        return _build(None)


def _build(event: Any) -> Parser:
    if event is None:
        pool, package = core_pb2.DESCRIPTOR.pool, _PLAIN_PACKAGE
    else:
        pool, package = event.file.pool, f"{_PACKAGE}.{event.full_name}"
    name = f"{package.replace('.', '/')}.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        pool.Add(_mirror_file(event, package, name))
    book: Any = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Book"))
    parse: Parser = book.FromString
    return parse


def _mirror_file(event: Any, package: str, name: str) -> descriptor_pb2.FileDescriptorProto:
    """Book/Page copied from EventBook/EventPage, with EventPage.no_commit in the
    `payload` oneof, and (given `event`) an Any copied from Any with its `value`
    typed as `event` (else the page's event stays a real Any)."""
    proto = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3")
    deps: set[str] = set()
    book = _copy(proto, "Book", core_pb2.EventBook.DESCRIPTOR, deps)
    page = _copy(proto, "Page", core_pb2.EventPage.DESCRIPTOR, deps)
    _field(book, "pages").type_name = f".{package}.Page"
    payload = [o.name for o in page.oneof_decl].index("payload")
    _field(page, "no_commit").oneof_index = payload
    if event is not None:
        packed = _copy(proto, "Any", any_pb2.Any.DESCRIPTOR, deps)
        _field(page, "event").type_name = f".{package}.Any"
        value = _field(packed, "value")
        value.type = _Field.TYPE_MESSAGE
        value.type_name = "." + event.full_name
        deps.add(event.file.name)
    proto.dependency.extend(sorted(deps - {name}))
    return proto


def _copy(
    proto: descriptor_pb2.FileDescriptorProto, name: str, source: Any, deps: set[str]
) -> descriptor_pb2.DescriptorProto:
    """Add message `name` declared exactly as `source` (fields, oneofs, reserved
    numbers), noting the files its field types come from in `deps`."""
    target = proto.message_type.add()
    source.CopyToProto(target)
    target.name = name
    for field in source.fields:
        kind = field.message_type or field.enum_type
        if kind is not None:
            deps.add(kind.file.name)
    return target


def _field(
    message: descriptor_pb2.DescriptorProto, name: str
) -> descriptor_pb2.FieldDescriptorProto:
    return next(f for f in message.field if f.name == name)
