"""What one in-memory "server" holds: the events per aggregate, and the same
commits as one ordered stream for the in-memory bus."""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
from dataclasses import dataclass, field

from angzarr_es._codec import TYPE_URL_PREFIX, RecordedEvent
from angzarr_es._types import AppendResult, Clock, Snapshot, utc_now
from angzarr_es.bus import Start
from angzarr_es.bus._delivery import start_config
from angzarr_es.errors import StoreUnavailable
from angzarr_es.subjects import Subjects

__all__ = ["Commit", "Key", "Stored", "World", "matches"]

# (domain, edition, root token)
Key = tuple[str, str, str]


@dataclass(slots=True)
class Commit:
    """A commit stamped with a correlation id (the correlation index)."""

    correlation_id: str
    key: Key
    events: list[RecordedEvent]


@dataclass(slots=True, frozen=True)
class Stored:
    """A commit as the stream holds it."""

    seq: int
    subject: str
    data: bytes
    """The EventBook, encoded as the JetStream store encodes it."""
    created_at: dt.datetime
    edition: str


@dataclass(slots=True)
class World:
    """Everything one in-memory "server" holds."""

    prefix: str = "angzarr"
    snapshot_history: int = 0
    type_url_prefix: str = TYPE_URL_PREFIX
    events: dict[Key, list[RecordedEvent]] = field(default_factory=dict)
    commits: dict[Key, int] = field(default_factory=dict)
    snapshots: dict[Key, list[Snapshot]] = field(default_factory=dict)
    log: list[Commit] = field(default_factory=list)
    keyed: dict[tuple[Key, str], AppendResult] = field(default_factory=dict)
    # The stream: every commit in order, under its stream sequence (1, 2, ...;
    # never reused, gaps where an edition was deleted).
    stream: list[Stored] = field(default_factory=list)
    last_seq: int = 0
    # Durable consumers: name -> (filter, stream sequence of the last one settled).
    durables: dict[str, tuple[str, int]] = field(default_factory=dict)
    # Deliveries per (durable, stream sequence), kept across projector restarts.
    delivered: dict[tuple[str, int], int] = field(default_factory=dict)
    # Set by readers waiting for the next commit.
    waiters: set[asyncio.Event] = field(default_factory=set)
    closed: bool = False
    # Per-domain layout (angzarr's): aggregate ids must be UUIDs.
    uuid_roots: bool = False
    # What commits and snapshots are stamped with.
    clock: Clock = utc_now
    subjects: Subjects = field(init=False)

    def __post_init__(self) -> None:
        self.subjects = Subjects(self.prefix)

    def check_open(self) -> None:
        """Raises StoreUnavailable once the client that owns the world is closed."""
        if self.closed:
            raise StoreUnavailable("the in-memory client was closed")

    def record(self, subject: str, data: bytes, created_at: dt.datetime, edition: str) -> int:
        """Add a commit to the stream; its stream sequence."""
        self.last_seq += 1
        self.stream.append(Stored(self.last_seq, subject, data, created_at, edition))
        self.notify()
        return self.last_seq

    def notify(self) -> None:
        for waiter in self.waiters:
            waiter.set()

    def next_after(self, seq: int, filter_subject: str) -> Stored | None:
        """The first commit after stream sequence `seq` on a subject `filter_subject` matches."""
        at = bisect.bisect_right(self.stream, seq, key=lambda s: s.seq)
        for stored in self.stream[at:]:
            if matches(filter_subject, stored.subject):
                return stored
        return None

    def position_for(self, start: Start) -> int:
        """The stream sequence after which a reader from `start` begins.

        Raises:
            ValueError, TypeError: an unknown start.
        """
        start_config(start)
        if start == "all":
            return 0
        if start == "new":
            return self.last_seq
        if isinstance(start, int):
            return start - 1
        assert isinstance(start, dt.datetime)
        for stored in self.stream:
            if stored.created_at >= start:
                return stored.seq - 1
        return self.last_seq

    def purge_edition(self, edition: str) -> None:
        """Drop the commits of `edition` from the stream."""
        self.stream = [s for s in self.stream if s.edition != edition]


def matches(filter_subject: str, subject: str) -> bool:
    """Whether a NATS subject filter (`*` one token, `>` the rest) matches `subject`."""
    want, have = filter_subject.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)
