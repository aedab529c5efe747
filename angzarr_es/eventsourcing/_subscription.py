"""`NatsSubscription`: the library's subscription over a JetStream consumer.

Iterating blocks until the next notification after `gt` is recorded (topics
filtered here). The consumer exists before the constructor returns, so no
notification recorded after `subscribe()` can be missed. `stop()` (also from
inside the loop over it) ends the iteration at once; leaving the `with`
block, or closing the factory, deletes the consumer.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import Notification, Subscription

from angzarr_es.eventsourcing._bridge import Closed, LoopThread
from angzarr_es.eventsourcing._feed import Buffer, Feed

if TYPE_CHECKING:
    from angzarr_es.eventsourcing._recorders import NatsApplicationRecorder

__all__ = ["NatsSubscription"]

CLOSE_TIMEOUT = 5.0
"""Seconds leaving the `with` block waits for the consumer to be deleted."""


class NatsSubscription(Subscription["NatsApplicationRecorder"]):
    """Notifications after `gt`, recorded ones first, then new ones as they are recorded."""

    __module__ = "angzarr_es.eventsourcing"

    def __init__(
        self, recorder: NatsApplicationRecorder, gt: int | None = None, topics: Sequence[str] = ()
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        datastore = recorder.datastore
        bridge = self._bridge = datastore.bridge
        feed = self._feed = Feed(datastore.wire, datastore.stream, recorder.layout, gt, topics)
        # Neither the feed nor its buffer refers to the subscription, so an
        # abandoned subscription is collected, and its finalizer ends the feed.
        self._buffer = Buffer(lambda: bridge.call_soon(feed.more))
        self._closing: concurrent.futures.Future[None] | None = None
        datastore.run(feed.start(self._buffer), f"subscribe to {recorder.layout.filter}")
        datastore.feeds.add(feed)
        weakref.finalize(self, _abandon, bridge, feed)

    def __next__(self) -> Notification:
        item = self._buffer.take(lambda: self._has_been_stopped)
        if item is None:
            raise StopIteration
        return item

    def stop(self) -> None:
        """End the iteration (at once, also from inside the loop over it)."""
        super().stop()
        self._buffer.wake()
        if self._closing is None:
            with contextlib.suppress(Closed):  # the factory closed it already
                self._closing = self._bridge.submit(self._feed.close())

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        try:
            super().__exit__(*args, **kwargs)
        finally:
            if self._closing is not None and not self._bridge.in_loop():
                with contextlib.suppress(concurrent.futures.CancelledError, TimeoutError):
                    self._closing.result(CLOSE_TIMEOUT)


def _abandon(bridge: LoopThread, feed: Feed) -> None:
    with contextlib.suppress(Closed):
        bridge.submit(feed.close())
