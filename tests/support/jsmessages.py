"""The JetStream API's JSON, as the tests write and read it beside the library.

Written from the API's documented request and reply bodies, only the fields
the tests use; the stream config is the package's public `StreamConfig`.
Reached as `from tests.support.jsadmin import messages as js`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from angzarr_es import StreamConfig

__all__ = [
    "H_EXPECTED_LAST_SUBJECT_SEQ",
    "NANOS",
    "ApiError",
    "ApiResponse",
    "ConsumerConfig",
    "ConsumerCreateRequest",
    "DurableInfo",
    "MsgGetRequest",
    "MsgGetResponse",
    "PubAck",
    "StoredMessage",
    "StreamConfig",
    "StreamInfo",
    "StreamState",
    "api_response",
    "durable_info",
    "encode",
    "msg_get",
    "pub_ack",
    "stream_info",
]

# A publish stored only if the subject's last message has this sequence.
H_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
# Durations in the API's JSON are nanoseconds.
NANOS = 1_000_000_000


class ApiError(msgspec.Struct, frozen=True):
    code: int = 0
    err_code: int = 0
    description: str = ""


class ApiResponse(msgspec.Struct, frozen=True):
    error: ApiError | None = None


class PubAck(msgspec.Struct, frozen=True):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: ApiError | None = None


class MsgGetRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    seq: int = 0
    last_by_subj: str = ""
    next_by_subj: str = ""


class StoredMessage(msgspec.Struct, frozen=True):
    subject: str = ""
    seq: int = 0
    data: bytes = b""  # base64 in the JSON
    hdrs: bytes = b""


class MsgGetResponse(msgspec.Struct, frozen=True):
    message: StoredMessage | None = None
    error: ApiError | None = None


class StreamState(msgspec.Struct, frozen=True):
    messages: int = 0
    bytes: int = 0
    first_seq: int = 0
    last_seq: int = 0
    num_subjects: int = 0
    consumer_count: int = 0


class StreamInfo(msgspec.Struct, frozen=True):
    config: dict[str, Any] | None = None
    state: StreamState = StreamState()
    error: ApiError | None = None


class ConsumerConfig(msgspec.Struct, frozen=True, omit_defaults=True):
    """Unset fields are left out: the server's defaults (deliver all, ack none)."""

    name: str = ""
    durable_name: str = ""
    deliver_policy: str = ""
    ack_policy: str = ""
    filter_subject: str = ""


class ConsumerCreateRequest(msgspec.Struct, frozen=True):
    stream_name: str
    config: ConsumerConfig
    action: str = "create"


class DurableInfo(msgspec.Struct, frozen=True):
    stream_name: str = ""
    name: str = ""
    num_pending: int = 0
    error: ApiError | None = None


encode = msgspec.json.Encoder().encode
api_response = msgspec.json.Decoder(ApiResponse).decode
pub_ack = msgspec.json.Decoder(PubAck).decode
msg_get = msgspec.json.Decoder(MsgGetResponse).decode
stream_info = msgspec.json.Decoder(StreamInfo).decode
durable_info = msgspec.json.Decoder(DurableInfo).decode
