"""EventBook encoding: one commit per JetStream message, events packed as Any.

Type URLs are `TYPE_URL_PREFIX` (`"type.googleapis.com/"`) + full message name
by default, as `Any.Pack` writes them; readers accept any prefix before the
last `/`. An event whose type is not known to this process's protobuf
descriptor pool stays available as the raw `Any`; a page angzarr wrote without
a committed event (a claim check, a pending two-phase page) is read as a
stand-in (see `RecordedEvent`).

    pack(event) -> Any                 unpack(any) -> the event (or the Any)
    type_name_of(type_url) -> name     RecordedEvent: one stored event
    encode_commit(...) -> bytes        decode_book(payload) -> EventBook
"""

from angzarr_es._codec import (
    TYPE_URL_PREFIX,
    RecordedEvent,
    decode_book,
    encode_commit,
    pack,
    type_name_of,
    unpack,
)

__all__ = [
    "TYPE_URL_PREFIX",
    "RecordedEvent",
    "decode_book",
    "encode_commit",
    "pack",
    "type_name_of",
    "unpack",
]
