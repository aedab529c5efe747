"""The JetStream event store: one literal subject per aggregate, one message per commit."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing
from dataclasses import dataclass

from google.protobuf.message import DecodeError, Message

from angzarr_es import _jsapi as js
from angzarr_es import codec
from angzarr_es._cache import NEW, Position, PositionCache
from angzarr_es._types import (
    ANY,
    AppendResult,
    ExpectedVersion,
    History,
    check_expected,
    check_range,
)
from angzarr_es._wire import Wire, api_error
from angzarr_es.codec import RecordedEvent
from angzarr_es.config import NatsConfig
from angzarr_es.errors import (
    AppendTooLarge,
    CodecError,
    ConcurrencyError,
    StoreTimeout,
)
from angzarr_es.pb import core_pb2
from angzarr_es.subjects import AggregateId, encode_root, root_bytes, validate_domain

__all__ = ["EventStore"]

# Direct Get page: commits per request and the byte budget the server may send.
PAGE_COMMITS = 1000
PAGE_BYTES = 8 * 1024 * 1024
# Headers and protocol framing around a commit, counted against max_payload.
COMMIT_OVERHEAD = 512
# How often an `expected=ANY` append re-reads and retries after losing a race.
ANY_ATTEMPTS = 64


@dataclass(slots=True)
class StoreContext:
    """What every store of one client shares."""

    wire: Wire
    cfg: NatsConfig
    cache: PositionCache

    @property
    def stream(self) -> str:
        return self.cfg.stream_name


@dataclass(slots=True)
class _Scan:
    """Outcome of reading an aggregate's commits."""

    next_sequence: int = 0
    stream_seq: int = 0
    complete: bool = True


class EventStore:
    """Append and load the aggregates of one domain.

    Obtain one from `Client.store(domain)`; stores are cheap and share the
    client's connection and position cache.
    """

    def __init__(self, ctx: StoreContext, domain: str) -> None:
        self._ctx = ctx
        self._wire = ctx.wire
        self._cache = ctx.cache
        self._domain = validate_domain(domain)
        self._prefix = f"{ctx.cfg.subject_prefix}.events.{domain}."

    @property
    def domain(self) -> str:
        """The domain this store is bound to."""
        return self._domain

    def subject(self, root: AggregateId) -> str:
        """The NATS subject holding `root`'s commits."""
        return self._prefix + encode_root(root)

    # -- writes --------------------------------------------------------------

    async def append(
        self,
        root: AggregateId,
        events: Iterable[Message],
        *,
        expected: ExpectedVersion,
        correlation_id: str = "",
    ) -> AppendResult:
        """Append `events` to aggregate `root` as one atomic commit.

        `expected` is the aggregate's next sequence as the caller knows it (0
        for a new aggregate), or `ANY`. The server enforces it.

        Raises:
            TypeError: an event is not a protobuf message (nothing is sent).
            InvalidAggregateId: bad `root`.
            ConcurrencyError: `expected` is not the aggregate's next sequence.
            AppendTooLarge: the commit exceeds the server's max_payload.
            StoreTimeout, StoreUnavailable, StoreError: the server did not accept it.
        """
        expected = check_expected(expected)
        if isinstance(events, Message):
            raise TypeError("events must be a list of protobuf messages, not one message")
        packed = [codec.pack(e) for e in events]
        subject = self.subject(root)
        pos = await self._position_for(subject, expected)
        if not packed:
            return AppendResult(first_sequence=pos.next_sequence, next_sequence=pos.next_sequence)
        cover_root = root_bytes(root)
        for _ in range(ANY_ATTEMPTS):
            payload = codec.encode_commit(
                domain=self._domain,
                root=cover_root,
                first_sequence=pos.next_sequence,
                events=packed,
                correlation_id=correlation_id,
                created_at=dt.datetime.now(dt.UTC),
            )
            size = len(payload) + len(subject) + COMMIT_OVERHEAD
            if size > self._wire.max_payload:
                raise AppendTooLarge(size, self._wire.max_payload)
            result = await self._publish(subject, payload, pos, len(packed))
            if isinstance(result, AppendResult):
                return result
            # Lost the race: `result` is the aggregate's real position.
            if expected is not ANY:
                raise ConcurrencyError(expected, result.next_sequence, subject=subject)
            pos = result
        raise ConcurrencyError(pos.next_sequence, pos.next_sequence, subject=subject)

    async def _position_for(self, subject: str, expected: ExpectedVersion) -> Position:
        """The position to append at, raising early when `expected` is already wrong."""
        pos = self._cache.get(subject)
        if pos is None:
            if expected == 0:
                return NEW  # the server checks the subject is empty: no lookup needed
            pos = await self._lookup(subject)
        if expected is ANY or expected == pos.next_sequence:
            return pos
        if expected > pos.next_sequence:
            # Our view may be behind (another process wrote, or a lagging
            # replica answered): only the stream leader can tell.
            pos = await self._leader_position(subject)
            if expected == pos.next_sequence:
                return pos
        raise ConcurrencyError(expected, pos.next_sequence, subject=subject)

    async def _publish(
        self, subject: str, payload: bytes, pos: Position, count: int
    ) -> AppendResult | Position:
        """Publish one commit with retries on lost acks.

        Returns the result, or the aggregate's real position on a conflict.
        """
        headers = {
            js.H_EXPECTED_LAST_SUBJECT_SEQ: str(pos.stream_seq),
            js.H_MSG_ID: f"{secrets.token_hex(12)}-{pos.next_sequence}",
        }
        attempts = self._ctx.cfg.append_attempts
        timeout = self._wire.timeout
        retried = False
        for attempt in range(1, attempts + 1):
            try:
                ack = await self._wire.publish_commit(subject, payload, headers, timeout)
            except StoreTimeout:
                retried = True
                if attempt < attempts:
                    continue
                landed = await self._landed(subject, payload, pos)
                if landed:
                    return self._committed(subject, pos, count, landed)
                raise
            err = ack.error
            if err is None:
                return self._committed(subject, pos, count, ack.seq)
            if err.err_code == js.DUPLICATE_IN_PROCESS and attempt < attempts:
                retried = True
                continue
            if err.err_code in js.CONFLICT_CODES:
                if retried:
                    landed = await self._landed(subject, payload, pos)
                    if landed:
                        return self._committed(subject, pos, count, landed)
                return await self._leader_position(subject)
            raise api_error(f"append to {subject}", err)
        raise StoreTimeout(f"append to {subject}: no acknowledgement after {attempts} attempts")

    def _committed(self, subject: str, pos: Position, count: int, seq: int) -> AppendResult:
        nxt = pos.next_sequence + count
        self._cache.put(subject, Position(nxt, seq))
        return AppendResult(
            first_sequence=pos.next_sequence, next_sequence=nxt, stream_sequence=seq
        )

    async def _landed(self, subject: str, payload: bytes, pos: Position) -> int:
        """Stream sequence of our commit if an earlier attempt was stored, else 0.

        The commit that won the slot after `pos` is the first one on the
        subject past `pos.stream_seq`; it is ours iff the bytes are ours.
        """
        winner = await self._wire.leader_next(self._ctx.stream, subject, pos.stream_seq + 1)
        if winner is not None and winner[0] == payload:
            return winner[1]
        return 0

    async def _lookup(self, subject: str) -> Position:
        """The aggregate's position from its last commit (any replica)."""
        last = await self._wire.direct_last(self._ctx.stream, subject)
        return self._remember(subject, last)

    async def _leader_position(self, subject: str) -> Position:
        """The aggregate's position as the stream leader knows it."""
        last = await self._wire.leader_last(self._ctx.stream, subject)
        return self._remember(subject, last)

    def _remember(self, subject: str, last: tuple[bytes, int] | None) -> Position:
        if last is None:
            return NEW
        payload, seq = last
        book = codec.decode_book(payload, subject=subject, stream_sequence=seq)
        pos = Position(codec.book_next_sequence(book), seq)
        self._cache.put(subject, pos)
        return pos

    # -- reads ---------------------------------------------------------------

    async def next_sequence(self, root: AggregateId) -> int:
        """The aggregate's next sequence (0 if it has no events).

        Raises:
            InvalidAggregateId, StoreTimeout, StoreUnavailable, CodecError
        """
        return await self._fresh_next(self.subject(root))

    async def load(
        self, root: AggregateId, from_sequence: int = 0, to_sequence: int | None = None
    ) -> History:
        """The aggregate's events with sequence in [from_sequence, to_sequence).

        Raises:
            InvalidAggregateId, CodecError, StoreTimeout, StoreUnavailable
        """
        lo, hi = check_range(from_sequence, to_sequence)
        subject = self.subject(root)
        events: list[RecordedEvent] = []
        scan = _Scan()
        async with aclosing(self._scan(subject, lo, hi, scan)) as pages:
            async for page in pages:
                events.extend(page)
        return History(events=events, next_sequence=await self._finish(subject, scan))

    async def iter(
        self, root: AggregateId, from_sequence: int = 0, to_sequence: int | None = None
    ) -> AsyncGenerator[RecordedEvent, None]:
        """Stream the aggregate's events page by page, holding one page at a time.

        Raises:
            InvalidAggregateId, CodecError, StoreTimeout, StoreUnavailable
        """
        lo, hi = check_range(from_sequence, to_sequence)
        subject = self.subject(root)
        scan = _Scan()
        async with aclosing(self._scan(subject, lo, hi, scan)) as pages:
            async for page in pages:
                for event in page:
                    yield event

    async def _finish(self, subject: str, scan: _Scan) -> int:
        if scan.complete:
            return scan.next_sequence
        return await self._fresh_next(subject)

    async def _fresh_next(self, subject: str) -> int:
        pos = await self._lookup(subject)
        cached = self._cache.get(subject)
        if cached is not None and cached.stream_seq > pos.stream_seq:
            pos = await self._leader_position(subject)
        return pos.next_sequence

    async def _scan(
        self, subject: str, lo: int, hi: int | None, scan: _Scan
    ) -> AsyncGenerator[list[RecordedEvent], None]:
        """Yield pages of events in [lo, hi); fill `scan` with where the aggregate ends."""
        known = self._cache.get(subject)
        start = 1
        if self._ctx.cfg.replay == "direct":
            async with aclosing(self._scan_direct(subject, lo, hi, scan)) as pages:
                async for page in pages:
                    yield page
            # A replica that lags serves a correct prefix but may miss the tail
            # this process has already seen committed: read the rest from the
            # stream leader through a consumer.
            if not scan.complete or known is None or scan.stream_seq >= known.stream_seq:
                self._remember_scan(subject, scan)
                return
            start = scan.stream_seq + 1
        async with aclosing(self._scan_consumer(subject, start, lo, hi, scan)) as pages:
            async for page in pages:
                yield page
        self._remember_scan(subject, scan)

    def _remember_scan(self, subject: str, scan: _Scan) -> None:
        if scan.complete and scan.stream_seq:
            self._cache.put(subject, Position(scan.next_sequence, scan.stream_seq))

    async def _scan_direct(
        self, subject: str, lo: int, hi: int | None, scan: _Scan
    ) -> AsyncGenerator[list[RecordedEvent], None]:
        start = 1
        while True:
            payloads, last, more = await self._wire.direct_batch(
                self._ctx.stream, subject, start, PAGE_COMMITS, PAGE_BYTES
            )
            page = await self._page(subject, payloads, start, last, lo, hi, scan)
            if page:
                yield page
            if not scan.complete or not more or not payloads:
                return
            start = last + 1

    async def _scan_consumer(
        self, subject: str, start: int, lo: int, hi: int | None, scan: _Scan
    ) -> AsyncGenerator[list[RecordedEvent], None]:
        replay = self._wire.consumer_replay(self._ctx.stream, subject, start, PAGE_COMMITS)
        async with aclosing(replay) as pages:
            async for payloads, first, last in pages:
                page = await self._page(subject, payloads, first, last, lo, hi, scan)
                if page:
                    yield page
                if not scan.complete:
                    return

    async def _page(
        self,
        subject: str,
        payloads: list[bytes],
        start: int,
        last: int,
        lo: int,
        hi: int | None,
        scan: _Scan,
    ) -> list[RecordedEvent]:
        try:
            return _decode_page(subject, payloads, last, lo, hi, scan)
        except _Corrupt as bad:
            seqs = await self._wire.direct_sequences(
                self._ctx.stream, subject, start, bad.index + 1
            )
            seq = seqs[bad.index] if len(seqs) > bad.index else 0
            raise CodecError(
                f"corrupt EventBook on {subject} at stream sequence {seq}: {bad.reason}",
                subject=subject,
                stream_sequence=seq,
            ) from bad.__cause__


class _Corrupt(Exception):
    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index
        self.reason = reason


def _decode_page(
    subject: str,
    payloads: list[bytes],
    last: int,
    lo: int,
    hi: int | None,
    scan: _Scan,
) -> list[RecordedEvent]:
    """Decode one page of commits into the events in [lo, hi), updating `scan`."""
    out: list[RecordedEvent] = []
    for index, payload in enumerate(payloads):
        try:
            book = core_pb2.EventBook.FromString(payload)
        except DecodeError as exc:
            raise _Corrupt(index, str(exc)) from exc
        pages = book.pages
        if hi is not None and pages and pages[0].header.sequence >= hi:
            scan.complete = False
            return out
        scan.next_sequence = codec.book_next_sequence(book)
        if pages and (not lo or pages[-1].header.sequence >= lo):
            out.extend(codec.recorded(book, lo, hi, subject=subject))
    if payloads:
        scan.stream_seq = last
    return out
