"""EventBook encoding: one commit per JetStream message, events packed as Any.

Type URLs are `"/" + full message name` (angzarr's convention); readers accept
any prefix before the last `/`. An event whose type is not known to this
process's protobuf descriptor pool stays available as the raw `Any`.

    pack(event) -> Any                 unpack(any) -> the event (or the Any)
    type_name_of(type_url) -> name     RecordedEvent: one stored event
    encode_commit(...) -> bytes        decode_book(payload) -> EventBook
"""

from angzarr_es._codec import (
    RecordedEvent,
    decode_book,
    encode_commit,
    pack,
    type_name_of,
    unpack,
)

__all__ = ["RecordedEvent", "decode_book", "encode_commit", "pack", "type_name_of", "unpack"]
