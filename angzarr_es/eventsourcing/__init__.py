"""A persistence module for the `eventsourcing` library, on NATS JetStream.

    PERSISTENCE_MODULE=angzarr_es.eventsourcing NATS_URL=nats://localhost:4222 python app.py

One message per stored event (so a stream sequence is a notification id),
one subject per aggregate, atomic batches for inserts of several messages,
reads by batch Direct Get, subscriptions through a JetStream consumer. The
settings are in `_settings`, the stream layout in `_layout`; docs/eventsourcing.md
says how to switch an application over and what it costs.

    _settings.py      the environment keys
    _layout.py        subjects of a recorder's records
    _records.py       payloads (msgpack)
    _bridge.py        the event-loop thread every call is handed to
    _errors.py        angzarr_es errors -> the library's persistence errors
    _datastore.py     what a factory's recorders share (connection, stream, cache)
    _writes.py        inserts: one publish or one atomic batch; conflicts; lost acks
    _reads.py         select_events, select_notifications, the last ids
    _feed.py          a subscription's consumer, and the hand-over to its thread
    _subscription.py  the library's Subscription
    _recorders.py     the four recorders
    _factory.py       Factory
"""

try:
    import eventsourcing as _library  # noqa: F401 - the library this module serves
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "angzarr_es.eventsourcing needs the eventsourcing library: "
        "pip install 'angzarr-es[eventsourcing]'"
    ) from exc

from angzarr_es.eventsourcing._factory import Factory
from angzarr_es.eventsourcing._recorders import (
    NatsAggregateRecorder,
    NatsApplicationRecorder,
    NatsProcessRecorder,
    NatsTrackingRecorder,
)
from angzarr_es.eventsourcing._subscription import NatsSubscription

__all__ = [
    "Factory",
    "NatsAggregateRecorder",
    "NatsApplicationRecorder",
    "NatsProcessRecorder",
    "NatsSubscription",
    "NatsTrackingRecorder",
]
