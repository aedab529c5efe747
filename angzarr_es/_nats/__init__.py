"""The one seam to nats-py.

Nothing outside this package imports `nats` (`tests/unit/test_seam.py` walks
the source to check it). Above the seam the code speaks bytes, the msgspec
structs of `messages`, and angzarr_es errors: nats-py's exceptions and
JetStream's error replies are translated in `errors`, in one table.

    wire.py         Wire: one connection and the parts below
    connection.py   connecting; nats-py's client with the store's shortcuts
    credentials.py  credentials and TLS, checked, as nats-py's options
    parser.py       a faster reading of MSG/HMSG for that client
    mux.py          requests and batch reads over one reply inbox
    collector.py    the replies of one batch read, as they come
    api.py          the JetStream API: subject templates, one method per operation
    messages.py     request and reply bodies, header names
    errors.py       the error table
    reads.py        Direct Get (any replica) and leader reads
    replay.py       replay through an ephemeral ordered consumer
    consumers.py    core subscriptions, pull requests and acks for the bus
    tap.py          a test's hook on requests and batch reads (testing.faults)
"""

from angzarr_es._nats import errors as errors
from angzarr_es._nats import messages as messages
from angzarr_es._nats.consumers import (
    ACK,
    PROGRESS,
    TERM,
    CoreSubscription,
    Pulled,
    Puller,
    calling,
    core_subscribe,
    flush,
    nak_body,
    reply,
)
from angzarr_es._nats.reads import Stored
from angzarr_es._nats.wire import Wire

__all__ = [
    "ACK",
    "PROGRESS",
    "TERM",
    "CoreSubscription",
    "Pulled",
    "Puller",
    "Stored",
    "Wire",
    "calling",
    "core_subscribe",
    "errors",
    "flush",
    "messages",
    "nak_body",
    "reply",
]
