"""JetStream API messages as msgspec Structs, with their codecs built once.

Every request and reply body the project sends or reads is declared here, once;
the headers it sets or reads are named here too.
"""

from __future__ import annotations

from typing import Any

import msgspec

from angzarr_es._nats.errors import api_error
from angzarr_es.errors import StoreError

H_EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
H_MSG_ID = "Nats-Msg-Id"
# Ours: a random id per append call with an idempotency key, stored with the
# commit, so that the commit found under the key is known to be this call's.
H_APPEND_ID = "Angzarr-Append-Id"
# angzarr's bus stamps its commits with their correlation id (src/bus/nats/config.rs).
H_CORRELATION = "Angzarr-Correlation"
# Atomic batch publish (nats-server 2.12+): every message of a batch carries
# the batch's id and its 1-based position; the last one also the commit.
H_BATCH_ID = "Nats-Batch-Id"
H_BATCH_SEQUENCE = "Nats-Batch-Sequence"
H_BATCH_COMMIT = "Nats-Batch-Commit"

# Headers nats-server sets on the replies and messages the project reads.
STATUS = "Status"
H_DESCRIPTION = "Description"
H_LAST_SEQ = "Nats-Last-Sequence"
H_SEQUENCE = "Nats-Sequence"
H_NUM_PENDING = "Nats-Num-Pending"
H_PENDING_MSGS = "Nats-Pending-Messages"
H_PIN_ID = "Nats-Pin-Id"

NANOS = 1_000_000_000


class ApiError(msgspec.Struct, frozen=True):
    code: int = 0
    err_code: int = 0
    description: str = ""

    def as_error(self, what: str) -> StoreError:
        """The typed error for this reply to `what` (see `errors.api_error`)."""
        return api_error(what, self.code, self.err_code, self.description)


class PubAck(msgspec.Struct, frozen=True):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: ApiError | None = None
    # An atomic batch's commit: its id and size; `seq` is its last message's.
    batch: str = ""
    count: int = 0


class DirectBatchRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    seq: int = 0
    next_by_subj: str = ""
    batch: int = 0
    max_bytes: int = 0
    no_hdr: bool = False


class MsgGetRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    seq: int = 0
    last_by_subj: str = ""
    next_by_subj: str = ""
    start_time: str = ""  # RFC 3339: the first message at or after it


class StoredMessage(msgspec.Struct, frozen=True):
    subject: str = ""
    seq: int = 0
    data: bytes = b""
    hdrs: bytes = b""


class MsgGetResponse(msgspec.Struct, frozen=True):
    message: StoredMessage | None = None
    error: ApiError | None = None


class StreamConfig(msgspec.Struct, frozen=True):
    name: str
    subjects: list[str] = []
    retention: str = "limits"
    storage: str = "file"
    max_consumers: int = -1
    max_msgs: int = -1
    max_bytes: int = -1
    max_age: int = 0
    max_msgs_per_subject: int = -1
    max_msg_size: int = -1
    discard: str = "new"
    num_replicas: int = 1
    duplicate_window: int = 0
    allow_direct: bool = False
    allow_atomic: bool = False
    deny_delete: bool = False
    deny_purge: bool = False
    allow_rollup_hdrs: bool = False


class StreamState(msgspec.Struct, frozen=True):
    messages: int = 0
    bytes: int = 0
    first_seq: int = 0
    last_seq: int = 0
    first_ts: str = ""
    last_ts: str = ""
    num_subjects: int = 0
    consumer_count: int = 0
    # With a `subjects_filter` request: subject -> message count (one page).
    subjects: dict[str, int] | None = None


class PeerInfo(msgspec.Struct, frozen=True):
    name: str = ""
    current: bool = False
    offline: bool = False


class ClusterInfo(msgspec.Struct, frozen=True):
    leader: str = ""
    replicas: list[PeerInfo] = []


class StreamInfo(msgspec.Struct, frozen=True):
    config: dict[str, Any] | None = None
    state: StreamState = StreamState()
    cluster: ClusterInfo = ClusterInfo()
    # Paged replies (subjects of a `subjects_filter` request).
    total: int = 0
    offset: int = 0
    limit: int = 0
    error: ApiError | None = None


class StreamInfoRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    subjects_filter: str
    offset: int = 0


class StreamList(msgspec.Struct, frozen=True):
    total: int = 0
    streams: list[StreamInfo] | None = None
    error: ApiError | None = None


class PurgeRequest(msgspec.Struct, frozen=True):
    filter: str


class PurgeResponse(msgspec.Struct, frozen=True):
    purged: int = 0
    error: ApiError | None = None


class OffsetRequest(msgspec.Struct, frozen=True):
    offset: int = 0


class Limits(msgspec.Struct, frozen=True):
    max_memory: int = -1
    max_storage: int = -1


class ApiStats(msgspec.Struct, frozen=True):
    total: int = 0
    errors: int = 0


class AccountInfo(msgspec.Struct, frozen=True):
    memory: int = 0
    storage: int = 0
    streams: int = 0
    consumers: int = 0
    limits: Limits = Limits()
    api: ApiStats = ApiStats()
    error: ApiError | None = None


class ConsumerConfig(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str = ""
    durable_name: str = ""
    deliver_policy: str = "all"
    opt_start_seq: int = 0
    ack_policy: str = "none"
    replay_policy: str = "instant"
    filter_subject: str = ""
    inactive_threshold: int = 0
    num_replicas: int = 0
    mem_storage: bool = False
    max_waiting: int = 0
    # Durable projectors (angzarr_es.bus).
    description: str = ""
    opt_start_time: str = ""
    ack_wait: int = 0
    max_deliver: int = 0
    max_ack_pending: int = 0
    # Partitioned projectors: one pinned client per consumer, the others on standby.
    priority_policy: str = ""
    priority_groups: list[str] = []
    priority_timeout: int = 0


class ConsumerCreateRequest(msgspec.Struct, frozen=True):
    stream_name: str
    config: ConsumerConfig
    action: str = "create"


class PullRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    batch: int
    expires: int = 0
    no_wait: bool = False
    idle_heartbeat: int = 0
    group: str = ""
    id: str = ""


class UnpinRequest(msgspec.Struct, frozen=True):
    group: str


class SequenceInfo(msgspec.Struct, frozen=True):
    consumer_seq: int = 0
    stream_seq: int = 0
    last_active: str = ""


class DurableInfo(msgspec.Struct, frozen=True):
    stream_name: str = ""
    name: str = ""
    config: dict[str, Any] = {}
    delivered: SequenceInfo = SequenceInfo()
    ack_floor: SequenceInfo = SequenceInfo()
    num_ack_pending: int = 0
    num_redelivered: int = 0
    num_waiting: int = 0
    num_pending: int = 0
    error: ApiError | None = None


class ConsumerList(msgspec.Struct, frozen=True):
    total: int = 0
    consumers: list[DurableInfo] | None = None
    error: ApiError | None = None


class StreamNames(msgspec.Struct, frozen=True):
    """`$JS.API.STREAM.NAMES` reply (first page: streams whose subjects collide
    with the request's `subject` filter)."""

    streams: list[str] | None = None
    error: ApiError | None = None


class ApiResponse(msgspec.Struct, frozen=True):
    error: ApiError | None = None


encode = msgspec.json.Encoder().encode
pub_ack = msgspec.json.Decoder(PubAck).decode
msg_get = msgspec.json.Decoder(MsgGetResponse).decode
stream_info = msgspec.json.Decoder(StreamInfo).decode
api_response = msgspec.json.Decoder(ApiResponse).decode
durable_info = msgspec.json.Decoder(DurableInfo).decode
stream_names = msgspec.json.Decoder(StreamNames).decode
stream_list = msgspec.json.Decoder(StreamList).decode
consumer_list = msgspec.json.Decoder(ConsumerList).decode
purge_response = msgspec.json.Decoder(PurgeResponse).decode
account_info = msgspec.json.Decoder(AccountInfo).decode
