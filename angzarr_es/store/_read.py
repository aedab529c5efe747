"""The read path: loads and iterations through Direct Get pages or a replay
consumer, the tail a lagging replica misses read from the leader, commits
decoded into events, and a corrupt commit named by its stream sequence."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing

from angzarr_es._codec import RecordedEvent
from angzarr_es._types import History, Snapshot, prepare_read
from angzarr_es.errors import CodecError, StoreError
from angzarr_es.store import _snapshots
from angzarr_es.store._cache import Position
from angzarr_es.store._commits import Corrupt, Guess, Scan, decode_commits
from angzarr_es.store._context import StoreContext, check_stream, fresh_position
from angzarr_es.subjects import AggregateId

__all__ = ["Reader"]

# Direct Get page: commits per request, and the byte budget the server may send
# for a load (as few round trips as possible) and for iter (bounded memory).
PAGE_COMMITS = 1000
LOAD_BYTES = 2 * 1024 * 1024
ITER_BYTES = 1024 * 1024


class Reader:
    """Reads the aggregates of one domain."""

    __slots__ = ("_cache", "_ctx", "_guess", "_wire")

    def __init__(self, ctx: StoreContext, domain: str) -> None:
        self._ctx = ctx
        self._wire = ctx.wire
        self._cache = ctx.cache
        self._guess = ctx.guesses.setdefault(domain, Guess())

    async def load(
        self,
        subject: str,
        lo: int,
        hi: int | None,
        as_of: dt.datetime | None,
        snapshot_subject: str | None,
    ) -> History:
        """The events in [lo, hi) on `subject` (checked arguments); with
        `snapshot_subject`, only those after the latest snapshot there below `hi`."""
        snap: Snapshot | None = None
        start = 1
        if snapshot_subject is not None:
            found = await _snapshots.latest(
                self._wire, self._ctx.cfg.snapshot_stream, snapshot_subject
            )
            if found is not None and (hi is None or found[0].sequence < hi):
                snap, start = found
                lo = max(lo, snap.sequence + 1)
        scan = Scan(anchored=start <= 1, guess=self._guess)
        if as_of is None and self._ctx.cfg.replay == "direct":
            events = await self._load_direct(subject, lo, hi, scan, start)
        else:
            events = []
            async with aclosing(self._scan(subject, lo, hi, scan, LOAD_BYTES, start)) as pages:
                async for page in pages:
                    kept = page if as_of is None else _until(page, as_of)
                    events.extend(kept)
                    if len(kept) < len(page):
                        scan.complete = False
                        break
        if start > 1 and not scan.stream_seq:
            scan.complete = False  # nothing at or after the snapshot's commit
        nxt = await self._finish(subject, scan)
        return History(events=events, next_sequence=nxt, snapshot=snap)

    async def iter(
        self,
        root: AggregateId,
        from_sequence: int,
        to_sequence: int | None,
        where: Callable[[AggregateId], str],
    ) -> AsyncGenerator[RecordedEvent, None]:
        """The events of `root` (at subject `where(root)`) in [from_sequence,
        to_sequence), holding one page of commits at a time; the arguments are
        checked when the iteration starts."""
        subject, lo, hi = prepare_read(root, from_sequence, to_sequence, where)
        if not self._ctx.readable:
            await check_stream(self._ctx, write=False)
        scan = Scan(guess=self._guess)
        async with aclosing(self._scan(subject, lo, hi, scan, ITER_BYTES)) as pages:
            async for page in pages:
                for event in page:
                    yield event

    async def _finish(self, subject: str, scan: Scan) -> int:
        if scan.complete:
            return scan.next_sequence
        return (await fresh_position(self._ctx, subject)).next_sequence

    async def _scan(
        self,
        subject: str,
        lo: int,
        hi: int | None,
        scan: Scan,
        page_bytes: int,
        start: int = 1,
    ) -> AsyncGenerator[list[RecordedEvent], None]:
        """Yield the events in [lo, hi), a commit or a page at a time, from the
        commits at or after stream sequence `start`; fill `scan` with where the
        aggregate ends.

        `page_bytes` bounds each Direct Get reply; below LOAD_BYTES, events are
        yielded one commit at a time so memory stays bounded by the page.
        """
        known = self._cache.get(subject)
        per_commit = page_bytes < LOAD_BYTES
        origin = start
        if self._ctx.cfg.replay == "direct":
            while True:
                payloads, last, more = await self._wire.reads.direct_batch(
                    self._ctx.stream, subject, start, PAGE_COMMITS, page_bytes
                )
                async for page in self._decode(
                    subject, payloads, start, last, lo, hi, scan, per_commit
                ):
                    yield page
                if not scan.complete or not more or not payloads:
                    break
                start = last + 1
        else:
            replay = self._wire.replayer.replay(self._ctx.stream, subject, start, PAGE_COMMITS)
            async with aclosing(replay) as batches:
                async for payloads, first, last in batches:
                    async for page in self._decode(
                        subject, payloads, first, last, lo, hi, scan, per_commit
                    ):
                        yield page
                    if not scan.complete:
                        return
        if _behind(known, scan):
            begin = max(origin, scan.stream_seq + 1)
            tail = self._leader_tail(subject, begin, lo, hi, scan, per_commit)
            async with aclosing(tail) as pages:
                async for page in pages:
                    yield page
        self._remember_scan(subject, scan)

    async def _load_direct(
        self, subject: str, lo: int, hi: int | None, scan: Scan, start: int
    ) -> list[RecordedEvent]:
        """`_scan` in direct mode for a whole load, decoding every page straight
        into one list: without its async generators (one per page, and one per
        leader read) a load of 10 events takes about 4% less."""
        known = self._cache.get(subject)
        events: list[RecordedEvent] = []
        begin = start
        while True:
            payloads, last, more = await self._wire.reads.direct_batch(
                self._ctx.stream, subject, begin, PAGE_COMMITS, LOAD_BYTES
            )
            if await self._decode_into(subject, payloads, begin, lo, hi, scan, events) and payloads:
                scan.stream_seq = last
            if not scan.complete or not more or not payloads:
                break
            begin = last + 1
        if _behind(known, scan):
            begin = max(start, scan.stream_seq + 1)
            tail = self._leader_tail(subject, begin, lo, hi, scan, False)
            async with aclosing(tail) as pages:
                async for page in pages:
                    events.extend(page)
        self._remember_scan(subject, scan)
        return events

    async def _leader_tail(
        self, subject: str, begin: int, lo: int, hi: int | None, scan: Scan, per_commit: bool
    ) -> AsyncGenerator[list[RecordedEvent], None]:
        """The commits from stream sequence `begin`, one leader-served request each."""
        while scan.complete:
            got = await self._wire.reads.leader_next(self._ctx.stream, subject, begin)
            if got is None:
                return
            payload, seq = got
            begin = seq + 1
            async for page in self._decode(subject, [payload], seq, seq, lo, hi, scan, per_commit):
                yield page

    def _remember_scan(self, subject: str, scan: Scan) -> None:
        if scan.complete and scan.stream_seq:
            self._cache.put(subject, Position(scan.next_sequence, scan.stream_seq))

    async def _decode(
        self,
        subject: str,
        payloads: list[bytes],
        start: int,
        last: int,
        lo: int,
        hi: int | None,
        scan: Scan,
        per_commit: bool,
    ) -> AsyncGenerator[list[RecordedEvent], None]:
        """Decode a page of commits, yielding it whole or one commit at a time."""
        done = True
        if not per_commit:
            page: list[RecordedEvent] = []
            done = await self._decode_into(subject, payloads, start, lo, hi, scan, page)
            if page:
                yield page
        else:
            for index, payload in enumerate(payloads):
                commit: list[RecordedEvent] = []
                done = await self._decode_into(
                    subject, (payload,), start, lo, hi, scan, commit, index
                )
                if commit:
                    yield commit
                if not done:
                    break
        if done and payloads:
            scan.stream_seq = last

    async def _decode_into(
        self,
        subject: str,
        payloads: Sequence[bytes],
        start: int,
        lo: int,
        hi: int | None,
        scan: Scan,
        out: list[RecordedEvent],
        offset: int = 0,
    ) -> bool:
        """Decode commits of the page read from stream sequence `start` into
        `out` (`offset`: the index of the first in that page); False if it
        stopped at `hi`. A corrupt commit is named by its stream sequence."""
        try:
            return decode_commits(subject, payloads, lo, hi, scan, out, offset)
        except Corrupt as bad:
            raise await self._corrupt(subject, start, bad) from bad.__cause__

    async def _corrupt(self, subject: str, start: int, bad: Corrupt) -> CodecError:
        """The error for a corrupt commit of the page from `start`, naming its stream sequence."""
        try:
            seqs = await self._wire.reads.direct_sequences(
                self._ctx.stream, subject, start, bad.index + 1
            )
        except StoreError:  # only for the message: the corruption is the error
            seqs = []
        seq = seqs[bad.index] if len(seqs) > bad.index else 0
        return CodecError(
            f"corrupt EventBook on {subject} at stream sequence {seq}: {bad.reason}",
            subject=subject,
            stream_sequence=seq,
        )


def _behind(known: Position | None, scan: Scan) -> bool:
    """Whether a complete scan ended before a commit this process has seen.

    A replica that lags serves a correct prefix but misses the tail already
    seen committed here (Direct Get is answered by any replica, and an R1
    replay consumer sits on a random one): the rest is read from the leader.
    """
    return scan.complete and known is not None and scan.stream_seq < known.stream_seq


def _until(page: list[RecordedEvent], as_of: dt.datetime) -> list[RecordedEvent]:
    """The leading events of `page` created at or before `as_of`."""
    for index, event in enumerate(page):
        if event.created_at > as_of:
            return page[:index]
    return page
