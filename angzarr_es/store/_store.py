"""The JetStream event store: one literal subject per aggregate, one message per commit."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing

from google.protobuf.message import Message

from angzarr_es import _otel
from angzarr_es._codec import RecordedEvent
from angzarr_es._observe import observe_append, observe_load
from angzarr_es._types import (
    AppendResult,
    ExpectedVersion,
    History,
    check_snapshot,
    check_uuid_root,
    prepare_append,
    prepare_read,
)
from angzarr_es.errors import InvalidSnapshot
from angzarr_es.store import _discovery, _snapshots
from angzarr_es.store._append import Appender
from angzarr_es.store._context import (
    StoreContext,
    check_stream,
    fresh_position,
    leader_position,
)
from angzarr_es.store._outcomes import nothing_sent
from angzarr_es.store._read import Reader
from angzarr_es.subjects import AggregateId, validate_domain, validate_edition

__all__ = ["EventStore"]


class EventStore:
    """Append and load the aggregates of one domain.

    Obtain one from `Client.store(domain)`; stores are cheap and share the
    client's connection and position cache.
    """

    def __init__(self, ctx: StoreContext, domain: str, edition: str | None = None) -> None:
        self._ctx = ctx
        self._domain = validate_domain(domain)
        self._edition = validate_edition(edition)
        self._subjects = ctx.subjects
        self._state = ctx.state(self._domain)
        self._stream = self._state.stream
        # Per-domain layout: angzarr reads roots as 16-byte UUIDs, so other ids are refused.
        self._where = self._uuid_subject if ctx.streams.per_domain else self._plain_subject
        self._appender = Appender(ctx, self._domain, self._edition, self._stream)
        self._reader = Reader(ctx, self._domain, self._edition)

    @property
    def domain(self) -> str:
        """The domain this store is bound to."""
        return self._domain

    @property
    def edition(self) -> str:
        """The edition this store writes and reads ("" for the main timeline)."""
        return self._edition

    @property
    def stream(self) -> str:
        """The JetStream stream holding this domain's commits."""
        return self._stream

    def subject(self, root: AggregateId) -> str:
        """The NATS subject holding `root`'s commits.

        Raises:
            InvalidAggregateId: a bad id; in per-domain layout, one that is
                not a UUID (angzarr cannot read it).
        """
        return self._where(root)

    def _plain_subject(self, root: AggregateId) -> str:
        return self._subjects.aggregate(self._domain, root, self._edition)

    def _uuid_subject(self, root: AggregateId) -> str:
        subject = self._subjects.aggregate(self._domain, root, self._edition)
        check_uuid_root(root)
        return subject

    def _snapshot_subject(self, root: AggregateId) -> str:
        return self._subjects.snapshot(self._domain, root, self._edition)

    # -- writes --------------------------------------------------------------

    async def append(
        self,
        root: AggregateId,
        events: Iterable[Message],
        *,
        expected: ExpectedVersion,
        correlation_id: str = "",
        idempotency_key: str = "",
    ) -> AppendResult:
        """Append `events` to aggregate `root` as one atomic commit.

        `expected` is the aggregate's next sequence as the caller knows it (0
        for a new aggregate), or `ANY`. The server enforces it.

        `idempotency_key` names this append for retries: when an earlier append
        to the aggregate with the same key stored its commit (within the
        stream's `duplicate_window`, 2 minutes by default), this one stores
        nothing and returns that commit's result, with `duplicate=True`,
        whatever `expected` says now. The events are not compared. (With an
        `expected` the aggregate has moved past, the commit at `expected` is
        read, where a command retried with its `expected` lands, then the
        aggregate's first 1,000 commits of the window.)

        Raises:
            TypeError: an event is not a protobuf message, or `correlation_id`
                not a str (nothing is sent).
            ValueError: an event lacks a required (proto2) field, or `expected`
                is negative (nothing is sent).
            TypeError: `expected` is neither an int nor `ANY` (a bool, a str or
                None is refused too).
            InvalidAggregateId: bad `root`.
            ConcurrencyError: `expected` is not the aggregate's next sequence.
            AppendTooLarge: the commit exceeds the server's max_payload.
            StoreUnavailable, StoreError: nothing was stored.
            StoreTimeout: no acknowledgement; the commit may have been stored
                (once). Retry with the same `idempotency_key`; without one,
                retry with the same `expected` (a ConcurrencyError then says
                something landed) or reload first: a blind `ANY` retry may
                store it twice.
        """
        observer = self._ctx.observer
        call = self._append(root, events, expected, correlation_id, idempotency_key)
        if _otel.ENABLED:
            call = _otel.traced_append(
                call, self._domain, self._edition, root, self.subject, expected, correlation_id
            )
        if observer is None:
            return await call
        return await observe_append(observer, self._domain, call)

    async def _append(
        self,
        root: AggregateId,
        events: Iterable[Message],
        expected: ExpectedVersion,
        correlation_id: str,
        idempotency_key: str,
    ) -> AppendResult:
        args = prepare_append(
            root,
            events,
            expected,
            correlation_id,
            idempotency_key,
            self._where,
            self._ctx.cfg.type_url_prefix,
        )
        if not self._state.writable:
            await check_stream(self._ctx, self._state, write=True)
        return await self._appender.append(root, args)

    async def save_snapshot(
        self, root: AggregateId, state: Message, sequence: int, *, retention: int = 0
    ) -> None:
        """Store `state` as the aggregate's state after its event `sequence`,
        stamped with the time now (`Snapshot.created_at`).

        Keeps the latest snapshot per aggregate plus `snapshot_history` older
        ones (in the snapshot stream). `retention` (angzarr's
        `SnapshotRetention`, e.g. `core_pb2.RETENTION_PERSIST`) is stored with
        the snapshot for angzarr's tools and returned by `load`; it does not
        change what this store keeps.

        Raises:
            TypeError: `state` is not a protobuf message.
            InvalidSnapshot: the aggregate has no event `sequence` (yet), or
                `retention` is not a `SnapshotRetention` value.
            StoreUnavailable, StoreError: nothing was stored.
            StoreTimeout: no acknowledgement; the snapshot may have been stored.
            InvalidAggregateId, CodecError
        """
        sequence = check_snapshot(state, sequence, retention)
        events = self._where(root)
        subject = self._snapshot_subject(root)
        if not self._state.readable and not await check_stream(self._ctx, self._state, write=False):
            raise InvalidSnapshot(f"{events} has no events; cannot snapshot sequence {sequence}")
        with nothing_sent(f"save snapshot to {subject}"):
            commit = await _snapshots.covering_commit(
                self._ctx.wire, self._stream, events, sequence
            )
        await _snapshots.save(
            self._ctx.wire,
            self._ctx.cfg.snapshot_stream,
            subject,
            _snapshots.encode(
                state, sequence, retention, self._ctx.cfg.type_url_prefix, self._ctx.clock()
            ),
            commit,
        )

    # -- reads ---------------------------------------------------------------

    async def next_sequence(self, root: AggregateId, *, leader: bool = False) -> int:
        """The aggregate's next sequence (0 if it has no events).

        Read by Direct Get from any replica, never older than what this client
        has seen. With `leader=True` the stream leader answers (one
        `STREAM.MSG.GET`): no replica's lag can make it older than any commit
        acknowledged so far, and this client's loads of the aggregate then read
        what a lagging replica still misses from the leader.

        Raises:
            InvalidAggregateId, StoreTimeout, StoreUnavailable, CodecError
        """
        subject = self._where(root)
        if not self._state.readable and not await check_stream(self._ctx, self._state, write=False):
            return 0  # per-domain layout: a domain no one has written to
        if leader:
            return (await leader_position(self._ctx, subject, self._stream)).next_sequence
        return (await fresh_position(self._ctx, subject, self._stream)).next_sequence

    async def load(
        self,
        root: AggregateId,
        from_sequence: int = 0,
        to_sequence: int | None = None,
        *,
        snapshot: bool = False,
        as_of: dt.datetime | None = None,
    ) -> History:
        """The aggregate's events with sequence in [from_sequence, to_sequence).

        With `snapshot=True` the latest snapshot below `to_sequence` (if any)
        is returned as `History.snapshot` and only the events after it are
        read, starting at the commit that holds the snapshot's event. With
        `as_of`, the history ends before the first event created after that
        instant. `next_sequence` is always the aggregate's own.

        Raises:
            ValueError: `as_of` is naive, or combined with `snapshot=True`; a
                negative `from_sequence`, or `to_sequence` below it.
            TypeError: a sequence that is not an int.
            InvalidAggregateId, CodecError, StoreTimeout, StoreUnavailable
        """
        call = self._load(root, from_sequence, to_sequence, snapshot, as_of)
        if _otel.ENABLED:
            call = _otel.traced_load(
                call, self._domain, self._edition, root, self.subject, from_sequence, to_sequence
            )
        observer = self._ctx.observer
        if observer is None:
            return await call
        return await observe_load(observer, self._domain, call)

    async def _load(
        self,
        root: AggregateId,
        from_sequence: int,
        to_sequence: int | None,
        snapshot: bool,
        as_of: dt.datetime | None,
    ) -> History:
        subject, lo, hi = prepare_read(
            root, from_sequence, to_sequence, self._where, as_of=as_of, snapshot=snapshot
        )
        snapshots = self._snapshot_subject(root) if snapshot else None
        if not self._state.readable and not await check_stream(self._ctx, self._state, write=False):
            return History(events=[], next_sequence=0)  # per-domain: a domain no one wrote to
        return await self._reader.load(subject, lo, hi, as_of, snapshots)

    def iter(
        self, root: AggregateId, from_sequence: int = 0, to_sequence: int | None = None
    ) -> AsyncGenerator[RecordedEvent, None]:
        """Stream the aggregate's events, holding one page of commits at a time.

        Leaving the loop early? Wrap in `contextlib.aclosing` so the read is
        released at once rather than when the generator is collected.

        Raises:
            ValueError: a negative `from_sequence`, or `to_sequence` below it.
            TypeError: a sequence that is not an int.
            InvalidAggregateId, CodecError, StoreTimeout, StoreUnavailable
        """
        return self._reader.iter(root, from_sequence, to_sequence, self._where)

    def list_roots(self) -> AsyncGenerator[str, None]:
        """Every aggregate id of this domain and edition, as given, in subject order.

        Pages through the server's subject index (one request per 100,000
        aggregates); holds one page at a time. A UUID root (also one given as
        text in another form) is listed as its canonical string. A subject whose last token no store writes (someone
        else's message on the domain's subjects) is skipped with a warning.

        Raises:
            StoreTimeout, StoreUnavailable, StoreError
        """
        roots = _discovery.roots(
            self._ctx.wire, self._stream, self._subjects, self._domain, self._edition
        )
        return self._checked(roots) if self._ctx.streams.per_domain else roots

    async def _checked(self, roots: AsyncGenerator[str, None]) -> AsyncGenerator[str, None]:
        """`roots`, or nothing if the domain's stream does not exist (per-domain layout)."""
        if not self._state.readable and not await check_stream(self._ctx, self._state, write=False):
            await roots.aclose()
            return  # a domain no one has written to
        async with aclosing(roots):
            async for root in roots:
                yield root
