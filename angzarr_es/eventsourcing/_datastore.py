"""`Datastore`: what the recorders of one factory share.

One event-loop thread, one NATS connection on it, the stream, the cache of
positions (subject -> last version or notification id, and its stream
sequence) fed by every read and write, and the subscriptions to end on close.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from angzarr_es import _provision
from angzarr_es._nats import Wire
from angzarr_es._nats import messages as m
from angzarr_es._nats.errors import STREAM_NAME_IN_USE
from angzarr_es._nats.wire import TapPoint
from angzarr_es.errors import StoreError
from angzarr_es.eventsourcing._bridge import LoopThread
from angzarr_es.eventsourcing._errors import translated
from angzarr_es.eventsourcing._layout import stream_subjects
from angzarr_es.eventsourcing._reads import Reader
from angzarr_es.eventsourcing._settings import Settings
from angzarr_es.eventsourcing._shared import Shared
from angzarr_es.eventsourcing._writes import Writer
from angzarr_es.store._cache import PositionCache

if TYPE_CHECKING:
    from angzarr_es.eventsourcing._feed import Feed

__all__ = ["Datastore"]

T = TypeVar("T")

CACHE_SIZE = 100_000
"""Subjects whose position is remembered (about 200 bytes each)."""
DUPLICATE_WINDOW = 120
"""Seconds the server remembers message ids (for resent inserts)."""


class Datastore:
    """The connection of one factory and the state its recorders share.

    Raises (constructor):
        OperationalError: NATS could not be reached, or refused the credentials.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stream = settings.stream
        self.bridge = LoopThread(f"angzarr-es-{settings.stream}")
        self.feeds: weakref.WeakSet[Feed] = weakref.WeakSet()
        self._stream_ready = False
        self._stream_lock = threading.Lock()
        cfg = settings.nats
        # Each server is tried twice at connect time (see Wire.connect).
        budget = 2 * len(cfg.servers) * (cfg.connect_timeout + 0.25) + 2
        try:
            with translated(f"connect to NATS ({settings.nats.url})"):
                self.wire = self.bridge.call(Wire.connect(cfg), max(budget, settings.call_timeout))
        except BaseException:
            self.bridge.close()
            raise
        shared = Shared(self.wire, self.stream, PositionCache(CACHE_SIZE), {})
        self.tap = TapPoint(self.wire)
        """Where faults are put on this factory's connection (`angzarr_es.testing.faults`)."""
        self.writer = Writer(shared)
        self.reader = Reader(shared)
        # Closed on close(), on garbage collection, or at exit: never a thread left behind.
        self._finalizer = weakref.finalize(
            self, self.bridge.close, _Shutdown(self.wire, self.feeds)
        )

    def run(self, work: Coroutine[Any, Any, T], what: str) -> T:
        """Run `work` on the event loop and wait for it (ANGZARR_ES_TIMEOUT at most).

        Raises:
            The library's persistence errors (see `_errors`).
        """
        with translated(what):
            return self.bridge.call(work, self.settings.call_timeout)

    def ensure_stream(self) -> None:
        """Create the stream, or bring it up to the module's settings (once per factory).

        Raises:
            NotSupportedError, ProgrammingError, OperationalError
        """
        with self._stream_lock:
            if not self._stream_ready:
                self.run(self._ensure(), f"create stream {self.stream}")
                self._stream_ready = True

    async def _ensure(self) -> None:
        wanted = m.StreamConfig(
            name=self.stream,
            subjects=stream_subjects(self.stream),
            num_replicas=self.settings.replicas,
            duplicate_window=DUPLICATE_WINDOW * m.NANOS,
            allow_direct=True,
            allow_atomic=self.wire.server_version >= _provision.ATOMIC_SERVER,
            deny_delete=True,
        )
        try:
            await _provision.ensure_event_stream(self.wire, wanted)
        except StoreError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
            # Another process created it between our look and our create.
            await _provision.ensure_event_stream(self.wire, wanted)

    def close(self) -> None:
        """End the subscriptions, close the connection, stop the thread. Safe twice."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return self.bridge.closed


class _Shutdown:
    """The closing coroutine, holding what it needs but not the datastore
    (a finalizer that held it would keep it alive forever)."""

    def __init__(self, wire: Wire, feeds: weakref.WeakSet[Feed]) -> None:
        self._wire = wire
        self._feeds = feeds

    async def __call__(self) -> None:
        for feed in list(self._feeds):
            await feed.close()
        await self._wire.close()
