"""angzarr's core messages as angzarr's own schemas declare them, for writing
books the way angzarr writes them.

Declared here by hand, field by field, from reading angzarr-project's
types.proto (docs/angzarr-schema-facts.md names the files and commits); nothing
is generated from or copied out of angzarr's code. Each schema lives in a
descriptor pool of its own, under angzarr's package name, so that it is
independent of `angzarr_es.pb.core_pb2`:

- `COORDINATOR`: `angzarr_client.proto.angzarr.v1`, the schema angzarr's
  coordinator compiles (angzarr f97af362, angzarr-project 80ce7c2): EventPage
  fields 6 `no_commit` and 7 `cascade_id`, SyncMode numbered from ASYNC = 0,
  no Cover.ext, no Snapshot.created_at, AngzarrDeferredSequence with two fields.
- `V1`: `io.angzarr.v1`, angzarr-project's newest: 6 and 7 reserved,
  Cover.ext, Snapshot.created_at,
  AngzarrDeferredSequence.source_component/command_index, SyncMode with
  UNSPECIFIED = 0.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf import timestamp_pb2 as _timestamp_pb2

from angzarr_es.pb import player_pb2

__all__ = ["COORDINATOR", "MESSAGES", "ROOT", "V1", "WHEN", "Schema", "angzarr_book"]

_F = descriptor_pb2.FieldDescriptorProto
OPT, REP = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
STRING, BYTES, BOOL, UINT32, UINT64 = (
    _F.TYPE_STRING,
    _F.TYPE_BYTES,
    _F.TYPE_BOOL,
    _F.TYPE_UINT32,
    _F.TYPE_UINT64,
)
MSG, ENUM = _F.TYPE_MESSAGE, _F.TYPE_ENUM
ANY, TIMESTAMP = ".google.protobuf.Any", ".google.protobuf.Timestamp"

MESSAGES = (
    "UUID",
    "Edition",
    "DomainDivergence",
    "Cover",
    "PayloadReference",
    "PageHeader",
    "ExternalDeferredSequence",
    "AngzarrDeferredSequence",
    "EventPage",
    "Snapshot",
    "EventBook",
)

# (name, number, type, type name or "", label, oneof or "", proto3 optional)
Field = tuple[str, int, int, str, int, str, bool]


def _f(name: str, number: int, kind: int, type_name: str = "", *, label: int = OPT,
       oneof: str = "", optional: bool = False) -> Field:  # fmt: skip
    return (name, number, kind, type_name, label, oneof, optional)


def _fields(package: str, *, coordinator: bool) -> dict[str, list[Field]]:
    p = f".{package}."
    deferred = [_f("source", 1, MSG, p + "Cover"), _f("source_seq", 2, UINT32)]
    page = [
        _f("header", 1, MSG, p + "PageHeader"),
        _f("created_at", 2, MSG, TIMESTAMP),
        _f("event", 3, MSG, ANY, oneof="payload"),
        _f("external", 4, MSG, p + "PayloadReference", oneof="payload"),
    ]
    snapshot = [
        _f("sequence", 2, UINT32),
        _f("state", 3, MSG, ANY),
        _f("retention", 4, ENUM, p + "SnapshotRetention"),
    ]
    cover = [
        _f("domain", 2, STRING),
        _f("root", 1, MSG, p + "UUID"),
        _f("correlation_id", 3, STRING),
        _f("edition", 4, MSG, p + "Edition"),
    ]
    if coordinator:
        page += [_f("no_commit", 6, BOOL), _f("cascade_id", 7, STRING, optional=True)]
    else:
        cover += [_f("ext", 6, MSG, ANY)]
        deferred += [_f("source_component", 3, STRING), _f("command_index", 4, UINT32)]
        snapshot += [_f("created_at", 5, MSG, TIMESTAMP)]
    return {
        "UUID": [_f("value", 1, BYTES)],
        "Edition": [
            _f("name", 1, STRING),
            _f("divergences", 2, MSG, p + "DomainDivergence", label=REP),
        ],
        "DomainDivergence": [_f("domain", 1, STRING), _f("sequence", 2, UINT32)],
        "Cover": cover,
        "PayloadReference": [
            _f("storage_type", 1, ENUM, p + "PayloadStorageType"),
            _f("uri", 2, STRING),
            _f("content_hash", 3, BYTES),
            _f("original_size", 4, UINT64),
            _f("stored_at", 5, MSG, TIMESTAMP),
        ],
        "PageHeader": [
            _f("sequence", 1, UINT32, oneof="sequence_type"),
            _f("external_deferred", 2, MSG, p + "ExternalDeferredSequence", oneof="sequence_type"),
            _f("angzarr_deferred", 3, MSG, p + "AngzarrDeferredSequence", oneof="sequence_type"),
            _f("sync_mode", 4, ENUM, p + "SyncMode", optional=True),
        ],
        "ExternalDeferredSequence": [_f("external_id", 1, STRING), _f("description", 2, STRING)],
        "AngzarrDeferredSequence": deferred,
        "EventPage": page,
        "Snapshot": snapshot,
        "EventBook": [
            _f("cover", 1, MSG, p + "Cover"),
            _f("snapshot", 2, MSG, p + "Snapshot"),
            _f("pages", 3, MSG, p + "EventPage", label=REP),
            _f("next_sequence", 6, UINT32),
        ],
    }


def _enums(*, coordinator: bool) -> dict[str, list[str]]:
    modes = ["ASYNC", "SIMPLE", "CASCADE", "DECISION", "ISOLATED"]
    return {
        "SyncMode": [f"SYNC_MODE_{m}" for m in (modes if coordinator else ["UNSPECIFIED", *modes])],
        "SnapshotRetention": ["RETENTION_DEFAULT", "RETENTION_PERSIST", "RETENTION_TRANSIENT"],
        "PayloadStorageType": [
            f"PAYLOAD_STORAGE_TYPE_{s}" for s in ("UNSPECIFIED", "FILESYSTEM", "GCS", "S3")
        ],
    }


def _message(proto: descriptor_pb2.DescriptorProto, fields: list[Field]) -> None:
    oneofs: list[str] = []
    synthetic: list[tuple[Any, str]] = []
    for name, number, kind, type_name, label, oneof, optional in fields:
        field = proto.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name
        if oneof:
            if oneof not in oneofs:
                oneofs.append(oneof)
            field.oneof_index = oneofs.index(oneof)
        if optional:
            field.proto3_optional = True
            synthetic.append((field, f"_{name}"))
    for name in oneofs:
        proto.oneof_decl.add(name=name)
    for field, name in synthetic:  # synthetic oneofs come after the real ones
        field.oneof_index = len(proto.oneof_decl)
        proto.oneof_decl.add(name=name)


@dataclass(frozen=True)
class Schema:
    """One of angzarr's schemas: `schema["EventBook"]` is its message class."""

    package: str
    classes: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.classes[name]

    def enum(self, enum: str, name: str) -> int:
        """The number of value `name` of `enum`."""
        pool = self.classes["EventBook"].DESCRIPTOR.file.pool
        value: int = pool.FindEnumTypeByName(f"{self.package}.{enum}").values_by_name[name].number
        return value


def _build(package: str, *, coordinator: bool) -> Schema:
    pool = descriptor_pool.DescriptorPool()
    for dep in (any_pb2, _timestamp_pb2):
        dep_proto = descriptor_pb2.FileDescriptorProto()
        dep.DESCRIPTOR.CopyToProto(dep_proto)
        pool.Add(dep_proto)
    fdp = descriptor_pb2.FileDescriptorProto(
        name=f"{package.replace('.', '/')}/types.proto",
        package=package,
        syntax="proto3",
        dependency=[any_pb2.DESCRIPTOR.name, _timestamp_pb2.DESCRIPTOR.name],
    )
    for enum, values in _enums(coordinator=coordinator).items():
        declared = fdp.enum_type.add(name=enum)
        for number, value in enumerate(values):
            declared.value.add(name=value, number=number)
    for name, fields in _fields(package, coordinator=coordinator).items():
        _message(fdp.message_type.add(name=name), fields)
    pool.Add(fdp)
    classes = {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))
        for name in MESSAGES
    }
    return Schema(package, classes)


COORDINATOR = _build("angzarr_client.proto.angzarr.v1", coordinator=True)
V1 = _build("io.angzarr.v1", coordinator=False)


# -- a book angzarr might write ------------------------------------------------------

ROOT = bytes(range(16))
WHEN = dt.datetime(2026, 12, 7, 7, 0, 0, 250000, tzinfo=dt.UTC)


def _cover(schema: Schema, book: Any) -> None:
    cover = book.cover
    cover.domain = "player"
    cover.root.value = ROOT
    cover.correlation_id = "wf-1"
    cover.edition.name = "angzarr"
    div = cover.edition.divergences.add()
    div.domain, div.sequence = "table", 7
    if "ext" in cover.DESCRIPTOR.fields_by_name:
        parent = schema["Cover"](domain="table", correlation_id="wf-1")
        parent.root.value = bytes(16)
        cover.ext.Pack(parent)


def _page(schema: Schema, book: Any, seq: int) -> Any:
    page = book.pages.add()
    page.header.sequence = seq
    page.header.sync_mode = schema.enum("SyncMode", "SYNC_MODE_CASCADE")
    page.created_at.FromDatetime(WHEN)
    return page


def angzarr_book(schema: Schema) -> bytes:
    """A commit of four pages with every field angzarr's `schema` has: an event,
    a claim check, then (coordinator) a pending page and a committed page with a
    cascade id, else two events."""
    book = schema["EventBook"]()
    _cover(schema, book)
    _page(schema, book, 0).event.Pack(player_pb2.FundsDeposited(amount_cents=1))
    ref = _page(schema, book, 1).external
    ref.storage_type = schema.enum("PayloadStorageType", "PAYLOAD_STORAGE_TYPE_S3")
    ref.uri = "s3://payloads/abc.bin"
    ref.content_hash = b"\x01" * 32
    ref.original_size = 300_000
    ref.stored_at.FromDatetime(WHEN)
    pending = _page(schema, book, 2)
    pending.event.Pack(player_pb2.FundsDeposited(amount_cents=3))
    last = _page(schema, book, 3)
    last.event.Pack(player_pb2.FundsDeposited(amount_cents=4))
    if schema is COORDINATOR:
        pending.no_commit = True
        pending.cascade_id = "cascade-9"
        last.cascade_id = "cascade-8"
    book.next_sequence = 4
    return book.SerializeToString()  # type: ignore[no-any-return]
