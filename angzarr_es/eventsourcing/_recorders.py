"""The library's four recorders on NATS JetStream.

Each is a thin synchronous shell: it hands its call to the factory's event
loop (`Datastore.run`) and waits, and raises only the library's persistence
errors. The work is in `_writes` and `_reads`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    Notification,
    ProcessRecorder,
    StoredEvent,
    Subscription,
    Tracking,
    TrackingRecorder,
)

from angzarr_es.eventsourcing._datastore import Datastore
from angzarr_es.eventsourcing._layout import Layout
from angzarr_es.eventsourcing._subscription import NatsSubscription

__all__ = [
    "NatsAggregateRecorder",
    "NatsApplicationRecorder",
    "NatsProcessRecorder",
    "NatsRecorder",
    "NatsTrackingRecorder",
]


class NatsRecorder:
    """What every recorder has: the factory's datastore and its subjects.

    `application_name` names the application whose records these are (its
    notification log and tracking records are its own); `purpose` names the
    aggregate sequences ("events", "snapshots").
    """

    def __init__(
        self, datastore: Datastore, *, application_name: str = "", purpose: str = "events"
    ) -> None:
        self.datastore = datastore
        self.layout = Layout(
            datastore.stream, application_name, purpose, datastore.settings.originator_id_type
        )

    def create_table(self) -> None:
        """Create the stream, or bring it up to the module's settings (the
        library's name for it; CREATE_TABLE decides whether the factory calls it)."""
        self.datastore.ensure_stream()


class NatsAggregateRecorder(NatsRecorder, AggregateRecorder):
    """Stored events, one message each, on one subject per aggregate."""

    # Topics (PERSISTENCE_MODULE, *_RECORDER_TOPIC, pickles) name the public module.
    __module__ = "angzarr_es.eventsourcing"

    # Whether inserts return notification ids (an application recorder's do).
    _notified = False

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Store the events atomically; an application recorder returns their
        notification ids (stream sequences).

        Raises:
            IntegrityError: a version is already recorded (or not after the last one).
        """
        ids = self._insert(stored_events, self._tracking(kwargs))
        return ids if self._notified else None

    def _tracking(self, kwargs: dict[str, Any]) -> Tracking | None:
        """The tracking record to insert with the events (a process recorder's)."""
        return None

    def _insert(self, stored_events: Sequence[StoredEvent], tracking: Tracking | None) -> list[int]:
        if not stored_events and tracking is None:
            return []
        what = f"insert into {self.layout.filter}"
        return self.datastore.run(
            self.datastore.writer.insert(self.layout, stored_events, tracking), what
        )

    def select_events(
        self,
        originator_id: uuid.UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        read = self.datastore.reader.events(
            self.layout, originator_id, gt=gt, lte=lte, desc=desc, limit=limit
        )
        return self.datastore.run(read, f"select events of {originator_id}")


class NatsApplicationRecorder(NatsAggregateRecorder, ApplicationRecorder):
    """Stored events whose stream sequences are their notification ids."""

    __module__ = "angzarr_es.eventsourcing"

    _notified = True

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        read = self.datastore.reader.notifications(
            self.layout,
            start=start,
            limit=limit,
            stop=stop,
            topics=topics,
            inclusive_of_start=inclusive_of_start,
        )
        return self.datastore.run(read, f"select notifications of {self.layout.filter}")

    def max_notification_id(self) -> int | None:
        read = self.datastore.reader.max_notification_id(self.layout)
        return self.datastore.run(read, f"last notification of {self.layout.filter}")

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return NatsSubscription(self, gt=gt, topics=topics)


class NatsTrackingRecorder(NatsRecorder, TrackingRecorder):
    """Tracking records, one message each, on one subject per upstream application."""

    __module__ = "angzarr_es.eventsourcing"

    def insert_tracking(self, tracking: Tracking) -> None:
        """Raises: IntegrityError: the notification id is not after the last one tracked."""
        what = f"track {tracking.application_name}"
        self.datastore.run(self.datastore.writer.insert(self.layout, (), tracking), what)

    def max_tracking_id(self, application_name: str) -> int | None:
        read = self.datastore.reader.max_tracking_id(self.layout, application_name)
        return self.datastore.run(read, f"last tracking record of {application_name}")


class NatsProcessRecorder(NatsTrackingRecorder, NatsApplicationRecorder, ProcessRecorder):
    """Stored events and tracking records, inserted atomically together."""

    __module__ = "angzarr_es.eventsourcing"

    def _tracking(self, kwargs: dict[str, Any]) -> Tracking | None:
        tracking = kwargs.get("tracking")
        return tracking if isinstance(tracking, Tracking) else None
