"""The hot-aggregate cache: the decoded histories of the aggregates a process
works on, bounded in bytes, least recently used out first.

An `Entry` holds the events [base, next_sequence) of one subject as they stood
at the commit with stream sequence `tail_seq`, and that commit's stored bytes
(`tail`). A load of a cached aggregate (`store/_read.py`) asks for the
subject's commits *from* `tail_seq`, inclusive, in one batch Direct Get: the
first reply must be `tail`, byte for byte, and anything after it is new.

Why the tail itself, and not the commits after it: every way events leave the
stream also takes the cached tail with it, and the check costs nothing but the
tail's bytes on the wire.

- A deleted edition and a purge of a subject remove all of its commits; a
  purge of the stream removes everything below some sequence; a deleted and
  re-created stream starts its sequences again, so that the tail's sequence
  holds another message or none. The stream sets `deny_delete`, so no single
  commit can go by itself.
- A replica that lags has no tail yet. When the answer does not start with
  the tail, the stream leader is asked for the commit at `tail_seq`: if it is
  the tail, the replica was behind, and the rest is read from the leader (as
  a plain load does when it ends before a commit this process has seen);
  otherwise the entry is dropped, the load reads the whole history, and the
  fallback is counted.

What the check cannot see: a purge that removes an aggregate's first commits
but keeps its last one (a raw `purge` with `keep` or `seq`, or a per-subject
message limit that the store's own settings forbid). Such a stream no longer
holds the aggregate's beginning, which a plain load reports as a `CodecError`;
a cached load keeps answering from memory until the entry is evicted or the
client's cache cleared (`docs/operations.md`, *The hot-aggregate cache*).

Events are shared: each `RecordedEvent` (and its protobuf message) in an entry
is the one every later load of the aggregate returns, so callers must treat
loaded events as read-only. Lists are never shared: each load gets its own.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from angzarr_es._codec import RecordedEvent
from angzarr_es._types import AppendResult
from angzarr_es.errors import CodecError
from angzarr_es.health import CacheStats
from angzarr_es.store._cache import Position
from angzarr_es.store._commits import Corrupt, Guess, Scan, decode_commits

__all__ = ["Entry", "HotCache", "commit_cost"]

# The estimate of what an entry holds in memory, from RSS measured per decoded
# commit (benchmarks/cachechild.py): upb keeps each commit's parse arena alive
# (about a kilobyte, plus the payload) for as long as any of its events lives,
# and each event adds its RecordedEvent and protobuf wrappers. Measured
# 1.44 KB for a one-event commit of 94 bytes, 7.4 KB for ten events in 668.
ENTRY_BYTES = 512
COMMIT_BYTES = 1024
EVENT_BYTES = 704
# An aggregate larger than this share of the cache is not kept: one huge
# history must not push out every other entry.
MAX_ENTRY_SHARE = 4
# Commits appended by this process are kept as sent and decoded when a load
# reads the entry (an append then costs no decoding); past this many in a
# row they are decoded on the next append.
PENDING_MAX = 64


def commit_cost(commits: int, events: int, payload_bytes: int) -> int:
    """Estimated bytes held by `commits` decoded commits of `events` events in all."""
    return commits * COMMIT_BYTES + events * EVENT_BYTES + payload_bytes


class Entry(NamedTuple):
    """One aggregate's cached events [base, next_sequence), up to its commit at
    `tail_seq`: the first `decoded` of them in `events`, the rest in the commits
    of `pending` (appended by this process, as sent)."""

    events: list[RecordedEvent]
    """Holds this entry's decoded events first; later entries may extend the
    same list in place, so read it only through `select`."""
    base: int
    next_sequence: int
    tail_seq: int
    tail: bytes
    size: int
    decoded: int
    pending: tuple[bytes, ...] = ()

    def select(self, lo: int, hi: int | None) -> list[RecordedEvent]:
        """A new list of the events with sequence in [lo, hi) (lo >= base; the
        entry has nothing pending: `HotCache.materialize`)."""
        stop = self.next_sequence if hi is None or hi > self.next_sequence else hi
        if stop <= lo:
            return []
        return self.events[lo - self.base : stop - self.base]


class HotCache:
    """subject -> Entry, least recently used out first, at most `max_bytes`
    (estimated); 0 disables it. Counts what loads found in it."""

    __slots__ = (
        "_data",
        "_guess",
        "bytes",
        "evictions",
        "fallbacks",
        "hits",
        "max_bytes",
        "misses",
    )

    def __init__(self, max_bytes: int) -> None:
        self._data: OrderedDict[str, Entry] = OrderedDict()
        self._guess = Guess()
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = self.misses = self.fallbacks = self.evictions = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, subject: str) -> Entry | None:
        entry = self._data.get(subject)
        if entry is not None:
            self._data.move_to_end(subject)
        return entry

    def put(self, subject: str, entry: Entry) -> None:
        """Keep `entry` unless the cache holds a later one for `subject` (a racing
        read or append got further), or it is too large to keep."""
        old = self._data.get(subject)
        if old is not None:
            if old.tail_seq > entry.tail_seq or (
                old.tail_seq == entry.tail_seq and old.base <= entry.base
            ):
                return
            self._remove(subject, old)
        if entry.size * MAX_ENTRY_SHARE > self.max_bytes:
            return
        self._data[subject] = entry
        self.bytes += entry.size
        while self.bytes > self.max_bytes:
            _, gone = self._data.popitem(last=False)
            self.bytes -= gone.size
            self.evictions += 1

    def extend(
        self, subject: str, entry: Entry, fresh: list[RecordedEvent], scan: Scan, added: int
    ) -> Entry:
        """`entry` followed by `fresh` (read or written after it, up to the commit
        `scan` ended at, costing `added` bytes), kept if it may be; returned either way."""
        grown = Entry(
            _extended(entry, fresh),
            entry.base,
            scan.next_sequence,
            scan.stream_seq,
            scan.tail,
            entry.size + added + len(scan.tail) - len(entry.tail),
            entry.decoded + len(fresh),
        )
        self.put(subject, grown)
        return grown

    def materialize(self, subject: str, entry: Entry, guess: Guess) -> Entry | None:
        """`entry` with its pending commits decoded (kept in its place); None,
        and the entry dropped, if they do not decode as the aggregate's next
        commits."""
        if not entry.pending:
            return entry
        scan = Scan(next_sequence=entry.base + entry.decoded, guess=guess)
        fresh: list[RecordedEvent] = []
        try:
            decode_commits(subject, entry.pending, 0, None, scan, fresh)
        except (Corrupt, CodecError):  # our own commits always decode; never trust them otherwise
            scan.next_sequence = -1
        if scan.next_sequence != entry.next_sequence:
            if self._data.get(subject) is entry:
                self._remove(subject, entry)
            return None
        done = entry._replace(
            events=_extended(entry, fresh), decoded=entry.decoded + len(fresh), pending=()
        )
        if self._data.get(subject) is entry:
            self._data[subject] = done
        return done

    def appended(self, subject: str, pos: Position, payload: bytes, result: AppendResult) -> None:
        """This process stored `payload` as the commit after `pos`: add it to the
        aggregate's entry (or start one for a new aggregate) without reading it
        back; its events are decoded when a load reads the entry."""
        if not self.max_bytes:
            return
        if result.duplicate or result.first_sequence != pos.next_sequence:
            return  # not this payload: an earlier append's commit under the same key
        entry = self._data.get(subject)
        if entry is None:
            if pos.stream_seq:
                return  # the aggregate's earlier events are not held here
            entry = Entry([], 0, 0, 0, b"", ENTRY_BYTES + len(subject), 0)
        elif entry.tail_seq != pos.stream_seq or entry.next_sequence != pos.next_sequence:
            return  # the entry is behind or ahead of `pos`: the next load catches up
        elif len(entry.pending) >= PENDING_MAX:
            found = self.materialize(subject, entry, self._guess)
            if found is None:
                return
            entry = found
        added = commit_cost(1, result.next_sequence - result.first_sequence, len(payload))
        self.put(
            subject,
            Entry(
                entry.events,
                entry.base,
                result.next_sequence,
                result.stream_sequence,
                payload,
                entry.size + added + len(payload) - len(entry.tail),
                entry.decoded,
                (*entry.pending, payload),
            ),
        )

    def drop(self, subject: str) -> None:
        entry = self._data.get(subject)
        if entry is not None:
            self._remove(subject, entry)

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0

    def _remove(self, subject: str, entry: Entry) -> None:
        del self._data[subject]
        self.bytes -= entry.size

    def stats(self) -> CacheStats:
        """What the cache holds and what loads found in it, so far."""
        return CacheStats(
            max_bytes=self.max_bytes,
            bytes=self.bytes,
            entries=len(self._data),
            events=sum(e.next_sequence - e.base for e in self._data.values()),
            hits=self.hits,
            misses=self.misses,
            fallbacks=self.fallbacks,
            evictions=self.evictions,
        )


def _extended(entry: Entry, fresh: list[RecordedEvent]) -> list[RecordedEvent]:
    """`entry`'s decoded events followed by `fresh`: its own list, extended in
    place, unless another entry extended that list already (a racing read or
    append from the same tail), whose events are then left alone."""
    events = entry.events
    if len(events) != entry.decoded:
        events = events[: entry.decoded]
    events += fresh
    return events
