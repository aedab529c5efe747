"""The hot-aggregate cache's bookkeeping, without a server: which entry wins,
extending a shared list, the byte bound, and the append hook."""

from __future__ import annotations

import datetime as dt

from angzarr_es import codec
from angzarr_es._types import AppendResult
from angzarr_es.store._cache import NEW, Position
from angzarr_es.store._commits import Guess, Scan, decode_commits
from angzarr_es.store._hot import MAX_ENTRY_SHARE, PENDING_MAX, Entry, HotCache
from tests.support.events import deposit

SUBJECT = "t.events.player.p"


def payload(first: int, n: int = 1) -> bytes:
    return codec.encode_commit(
        domain="player",
        root=b"p",
        first_sequence=first,
        events=[codec.pack(deposit(first + i)) for i in range(n)],
        correlation_id="",
        created_at=dt.datetime.now(dt.UTC),
    )


def entry(next_sequence: int, tail_seq: int, base: int = 0, size: int = 100) -> Entry:
    return Entry([], base, next_sequence, tail_seq, b"t%d" % tail_seq, size, next_sequence - base)


def test_the_later_entry_wins_and_a_lower_base_wins_a_tie() -> None:
    hot = HotCache(10_000)
    hot.put(SUBJECT, entry(5, 50, base=3))
    hot.put(SUBJECT, entry(4, 40))  # an older read finishing late
    assert hot.get(SUBJECT) == entry(5, 50, base=3)
    hot.put(SUBJECT, entry(5, 50, base=0))
    assert hot.get(SUBJECT) == entry(5, 50, base=0)
    hot.put(SUBJECT, entry(5, 50, base=2))
    assert hot.get(SUBJECT) == entry(5, 50, base=0)
    assert hot.bytes == 100


def test_least_recently_used_entries_go_first_and_the_bound_holds() -> None:
    hot = HotCache(1000)
    for i in range(5):
        hot.put(f"s{i}", entry(1, i + 1, size=200))
    assert hot.get("s0") is not None  # used: now the most recent
    hot.put("s5", entry(1, 9, size=200))
    assert hot.get("s1") is None
    assert hot.get("s0") is not None
    assert hot.bytes == 1000
    assert hot.evictions == 1
    hot.put("huge", entry(1, 10, size=1000 // MAX_ENTRY_SHARE + 1))
    assert hot.get("huge") is None
    assert hot.stats().entries == 5


def test_extending_keeps_older_entries_on_the_same_list_intact() -> None:
    hot = HotCache(1 << 20)
    scan = Scan()
    base = Entry([], 0, 0, 0, b"", 10, 0)
    first: list[codec.RecordedEvent] = []
    decode_commits(SUBJECT, [payload(0, 2)], 0, None, scan, first)
    scan.stream_seq, scan.tail = 1, b"one"
    one = hot.extend(SUBJECT, base, first, scan, 5)
    assert one.select(0, None) == first
    # Two extensions of the same entry (a racing read and append): the second
    # must not see the first's events.
    a_scan = Scan(next_sequence=3, stream_seq=2, tail=b"a")
    a = hot.extend(SUBJECT, one, [first[0]], a_scan, 1)
    b_scan = Scan(next_sequence=3, stream_seq=3, tail=b"b")
    b = hot.extend(SUBJECT, one, [first[1]], b_scan, 1)
    assert a.select(0, None) == [*first, first[0]]
    assert b.select(0, None) == [*first, first[1]]
    assert one.select(0, None) == first
    assert hot.get(SUBJECT) == b
    assert b.select(1, 2) == [first[1]]
    assert b.select(5, None) == []


def appended(hot: HotCache, at: Position, commit: bytes, first: int, nxt: int, seq: int) -> None:
    result = AppendResult(first_sequence=first, next_sequence=nxt, stream_sequence=seq)
    hot.appended(SUBJECT, at, commit, result)


def test_an_append_starts_a_new_aggregate_and_extends_a_matching_entry() -> None:
    hot = HotCache(1 << 20)
    p0, p1 = payload(0, 2), payload(2)
    appended(hot, NEW, p0, 0, 2, 7)
    got = hot.get(SUBJECT)
    assert got is not None
    assert (got.next_sequence, got.tail_seq, got.tail, got.pending) == (2, 7, p0, (p0,))
    appended(hot, Position(2, 7), p1, 2, 3, 9)
    got = hot.get(SUBJECT)
    assert got is not None
    assert (got.next_sequence, got.tail_seq, got.tail, got.pending) == (3, 9, p1, (p0, p1))
    # Decoded when read, and the decoded entry takes its place.
    done = hot.materialize(SUBJECT, got, Guess())
    assert done is not None
    assert done.pending == ()
    assert [e.event for e in done.select(0, None)] == [deposit(0), deposit(1), deposit(2)]
    assert hot.get(SUBJECT) is done


def test_many_appends_in_a_row_are_decoded_a_batch_at_a_time() -> None:
    hot = HotCache(1 << 24)
    appended(hot, NEW, payload(0), 0, 1, 1)
    for n in range(1, PENDING_MAX + 5):
        appended(hot, Position(n, n), payload(n), n, n + 1, n + 1)
    got = hot.get(SUBJECT)
    assert got is not None
    assert (got.decoded, len(got.pending)) == (PENDING_MAX, 5)


def test_an_append_leaves_alone_what_it_cannot_vouch_for() -> None:
    hot = HotCache(1 << 20)
    # No entry, and not a new aggregate: its earlier events are unknown here.
    appended(hot, Position(3, 5), payload(3), 3, 4, 6)
    assert hot.get(SUBJECT) is None
    hot.put(SUBJECT, entry(3, 5))
    # An entry behind the position appended at: left for the next load.
    appended(hot, Position(4, 8), payload(4), 4, 5, 9)
    assert hot.get(SUBJECT) == entry(3, 5)
    # A duplicate of an earlier append (another commit than this payload).
    result = AppendResult(first_sequence=3, next_sequence=4, stream_sequence=6, duplicate=True)
    hot.appended(SUBJECT, Position(3, 5), payload(3), result)
    assert hot.get(SUBJECT) == entry(3, 5)
    # A payload that is not the commit at the position: the entry is dropped
    # when it is read.
    appended(hot, Position(3, 5), payload(0), 3, 4, 6)
    got = hot.get(SUBJECT)
    assert got is not None
    assert hot.materialize(SUBJECT, got, Guess()) is None
    assert hot.get(SUBJECT) is None


def test_a_disabled_cache_keeps_nothing() -> None:
    hot = HotCache(0)
    assert not hot.enabled
    appended(hot, NEW, payload(0), 0, 1, 1)
    assert len(hot) == 0
