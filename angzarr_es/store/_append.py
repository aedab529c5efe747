"""The append path: where to append, publishing a commit with retries on lost
acknowledgements, finding out whether a lost attempt landed, idempotency keys,
and the turns `expected=ANY` appends to one aggregate take.

Every failure says what the stream may hold (`_outcomes`): until an attempt
of the commit may have been stored (it went unanswered, or is "in process"),
a failure means nothing was stored; after that, unless a leader read finds
the commit, or a rival's in its slot, the outcome is unknown (StoreTimeout).
With an idempotency key the outcome is the key's command's, which an earlier
call may have stored: reads that cannot tell report it unknown too (`_keys`),
and a read behind `expected` is read again while a deposed leader may still
answer (`_refusals.caught_up`).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets

from google.protobuf import any_pb2

from angzarr_es import _codec, _otel
from angzarr_es._nats import Stored
from angzarr_es._nats import messages as m
from angzarr_es._nats.errors import CONFLICT_CODES, DUPLICATE_IN_PROCESS
from angzarr_es._types import ANY, Append, AppendResult, ExpectedVersion
from angzarr_es.errors import (
    AppendTooLarge,
    ConcurrencyError,
    InvalidEdition,
    StoreError,
    StoreTimeout,
)
from angzarr_es.store import _correlation, _refusals, _shared
from angzarr_es.store._cache import NEW, Position
from angzarr_es.store._context import (
    StoreContext,
    fresh_position,
    leader_position,
    leader_tail,
    lookup,
)
from angzarr_es.store._keys import Keyed, Keys
from angzarr_es.store._outcomes import nothing_sent, nothing_stored, unknown_outcome
from angzarr_es.subjects import AggregateId, root_bytes

__all__ = ["Appender"]

# Headers and protocol framing around a commit, counted against max_payload.
COMMIT_OVERHEAD = 1024
# Leader re-reads (1, 2, 4, ... ms apart) waiting for a rival's commit to appear.
SETTLE_READS = 6
# How often an `expected=ANY` append re-reads and retries after losing a race.
ANY_ATTEMPTS = 64
# Ids derived in a row for a key whose commits were deleted (one per deletion
# within the duplicate window).
KEY_DERIVATIONS = 64


class Appender:
    """Appends commits to the aggregates of one domain and edition."""

    __slots__ = (
        "_angzarr",
        "_cache",
        "_clock",
        "_ctx",
        "_domain",
        "_edition",
        "_keys",
        "_stream",
        "_turns",
        "_wire",
    )

    def __init__(self, ctx: StoreContext, domain: str, edition: str, stream: str) -> None:
        self._ctx = ctx
        self._wire = ctx.wire
        self._cache = ctx.cache
        self._clock = ctx.clock
        self._turns = ctx.turns
        self._domain = domain
        self._edition = edition
        self._stream = stream
        self._keys = Keys(ctx, stream)
        # Per-domain layout: commits carry angzarr's correlation header too.
        self._angzarr = ctx.streams.per_domain

    async def append(self, root: AggregateId, args: Append[str]) -> AppendResult:
        """Store `args` (checked, `args.where` the aggregate's subject) as one commit."""
        expected, packed, subject = args.expected, args.packed, args.where
        cid = args.correlation_id
        entry = self._ctx.subjects.correlation(cid) if cid else ""
        if not packed:
            # Nothing to write, so no server check: read the current position.
            with nothing_sent(f"append to {subject}"):
                pos = await fresh_position(self._ctx, subject, self._stream)
                if expected is not ANY and expected != pos.next_sequence:
                    # A lagging replica?
                    pos = await leader_position(self._ctx, subject, self._stream)
            if expected is not ANY and expected != pos.next_sequence:
                raise ConcurrencyError(expected, pos.next_sequence, subject=subject)
            return AppendResult(first_sequence=pos.next_sequence, next_sequence=pos.next_sequence)
        # JetStream deduplicates by Nats-Msg-Id across the whole stream: the
        # id of a key is scoped to the aggregate's subject.
        keyed = None
        key = args.idempotency_key
        if key:
            digest = hashlib.blake2b(f"{subject}\n{key}".encode(), digest_size=16).hexdigest()
            keyed = Keyed("key-" + digest, secrets.token_hex(8))
        if expected is not ANY:
            return await self._append(root, subject, entry, packed, expected, cid, keyed)
        # ANY appends to one aggregate take turns within the process: racing
        # each other, n of them cost about n*n/2 requests, and a burst of 100
        # exhausted the retries of one of them (found by review).
        async with self._turns.turn(subject):
            return await self._append(root, subject, entry, packed, expected, cid, keyed)

    async def _append(
        self,
        root: AggregateId,
        subject: str,
        entry: str,
        packed: list[any_pb2.Any],
        expected: ExpectedVersion,
        correlation_id: str,
        keyed: Keyed | None,
    ) -> AppendResult:
        try:
            pos = await self._position_for(subject, expected, keyed)
            cover_root = root_bytes(root)
            for _ in range(ANY_ATTEMPTS):
                payload = _codec.encode_commit(
                    domain=self._domain,
                    root=cover_root,
                    first_sequence=pos.next_sequence,
                    events=packed,
                    correlation_id=correlation_id,
                    created_at=self._clock(),
                    edition=self._edition,
                )
                size = len(payload) + len(subject) + COMMIT_OVERHEAD
                if size > self._wire.max_payload:
                    raise AppendTooLarge(size, self._wire.max_payload, events=len(packed))
                if entry:
                    # Each round starts with nothing of ours stored: a refusal
                    # that returns a position proves our attempts cannot land.
                    with nothing_sent(f"append to {subject}"):
                        await _correlation.index(self._ctx, entry, subject, pos)
                result = await self._publish(
                    subject, payload, pos, len(packed), keyed, correlation_id
                )
                if isinstance(result, AppendResult):
                    self._ctx.hot.appended(subject, pos, payload, result)
                    return result
                # Refused: `result` is the aggregate's real position. If it is the
                # one the caller expected, only our idea of the last commit's
                # stream sequence was stale (an edition was deleted and rewritten
                # since we cached it): publish again at the real position.
                if keyed is not None and expected is not ANY and result.next_sequence < expected:
                    result = await _refusals.caught_up(
                        self._ctx, self._stream, subject, expected, result, pos
                    )
                if expected is not ANY and result.next_sequence != expected:
                    raise ConcurrencyError(expected, result.next_sequence, subject=subject)
                if self._ctx.observer is not None:
                    self._ctx.observer.retried(self._domain, "lost_race")
                pos = result
            raise ConcurrencyError(
                pos.next_sequence,
                pos.next_sequence,
                subject=subject,
                detail=f"expected=ANY lost the race for the next sequence {ANY_ATTEMPTS} times "
                f"in a row (the aggregate is at {pos.next_sequence})",
            )
        except ConcurrencyError as conflict:
            if keyed is None:
                raise
            # The aggregate moved: perhaps by this idempotency key's earlier append.
            try:
                earlier = await self._keys.find(subject, keyed, expected, conflict.actual)
            except StoreError as exc:
                # Whether the key's command is stored is what the caller asks.
                raise StoreTimeout(
                    f"append to {subject}: the aggregate moved past `expected`, and looking "
                    f"for the idempotency key's earlier commit failed ({exc})",
                    err_code=exc.err_code,
                ) from exc
            if earlier is None:
                raise
            return earlier

    async def _position_for(
        self, subject: str, expected: ExpectedVersion, keyed: Keyed | None
    ) -> Position:
        """The position to append at, raising early when `expected` is already wrong."""
        with nothing_sent(f"append to {subject}"):
            seen = pos = self._cache.get(subject)
            if pos is None:
                if expected == 0:
                    await self._not_angzarrs(subject)
                    return NEW  # the server checks the subject is empty: no lookup needed
                pos = await lookup(self._ctx, subject, self._stream)
            if expected is ANY or expected == pos.next_sequence:
                if not pos.stream_seq:
                    await self._not_angzarrs(subject)
                return pos
            # A mismatch: nothing is published, but our view may be behind (another
            # process wrote, or a lagging replica answered), so the stream leader
            # decides, and gives the real position for the error.
            pos = await leader_position(self._ctx, subject, self._stream)
            if expected == pos.next_sequence:
                return pos
            if not pos.stream_seq:  # what a load of angzarr's edition told the caller?
                await self._not_angzarrs(subject)
        if keyed is not None and pos.next_sequence < expected:
            # The key's command may be stored at `expected`: a read behind it may
            # be a deposed leader's. Past the wait, whether it is stored is unknown.
            pos = await _refusals.caught_up(self._ctx, self._stream, subject, expected, pos, seen)
            if expected == pos.next_sequence:
                return pos
        raise ConcurrencyError(expected, pos.next_sequence, subject=subject)

    async def _not_angzarrs(self, subject: str) -> None:
        """Refuse to start an edition's own timeline on `subject` (empty)
        when angzarr's bus already wrote that edition on the aggregate's
        subject (`_shared`): its commits there would hide angzarr's from
        every read.

        Raises:
            InvalidEdition: angzarr wrote the edition; nothing was sent.
        """
        if not self._edition:
            return
        base = subject[: -len(self._edition) - 1]
        if await _shared.has_edition(self._ctx, base, self._edition):
            raise InvalidEdition(
                f"edition {self._edition!r} of {base} was written by angzarr on the "
                "aggregate's subject: angzarr_es reads it, but appends only to editions "
                "it keeps on their own subject (use another edition name)"
            )

    async def _publish(
        self,
        subject: str,
        payload: bytes,
        pos: Position,
        count: int,
        keyed: Keyed | None,
        correlation_id: str,
    ) -> AppendResult | Position:
        """Publish one commit with retries on lost acks (under an idempotency
        key's ids when `keyed`, else a random id).

        Returns the result, or the aggregate's real position on a conflict.
        """
        key_id = own = ""
        if keyed is not None:
            key_id, own = keyed
        msg_id = key_id or f"{secrets.token_hex(12)}-{pos.next_sequence}"
        headers = {
            m.H_EXPECTED_LAST_SUBJECT_SEQ: str(pos.stream_seq),
            m.H_MSG_ID: msg_id,
        }
        if own:
            headers[m.H_APPEND_ID] = own
        if _otel.ENABLED:  # the append span's context, as angzarr's bus reads it
            _otel.inject(headers)
        if correlation_id and self._angzarr:
            headers[m.H_CORRELATION] = correlation_id
        observer = self._ctx.observer
        if observer is not None:
            observer.commit_headers(headers)
        attempts = self._ctx.cfg.append_attempts
        timeout = self._wire.timeout
        # Whether an attempt may have been stored (unanswered, or in process):
        # from then on a failure is an unknown outcome, not "nothing stored".
        unknown = False
        derived = attempt = 0
        # An answer slower than this may be a later copy's (the wire sends an
        # unanswered publish again): an earlier copy may have been stored.
        slow = self._wire.resend_after(timeout)
        clock = asyncio.get_running_loop().time
        # Refusals that proved nothing, re-checked for a while (_refusals).
        doubts = _refusals.Doubts(self._ctx.cfg.deposed_leader_wait)
        while attempt < attempts:
            attempt += 1
            sent = clock()
            try:
                ack = await self._wire.publish_commit(
                    self._stream, subject, payload, headers, timeout
                )
            except StoreTimeout as exc:
                unknown = True
                if attempt < attempts:
                    if observer is not None:
                        observer.retried(self._domain, "timeout")
                    continue
                return await self._ours_or(subject, msg_id, pos, count, own, exc)
            except StoreError as exc:  # this attempt was not sent, or refused
                if unknown or clock() - sent >= slow:
                    raise unknown_outcome(f"append to {subject}", exc) from exc
                raise
            unknown = unknown or clock() - sent >= slow
            err = ack.error
            if err is None:
                if ack.duplicate:
                    if not key_id:
                        # A random id: an earlier attempt of this call (a
                        # cluster answers a retry that way).
                        return self._committed(subject, pos, count, ack.seq)
                    try:
                        earlier = await self._keys.earlier(subject, ack.seq, own)
                    except StoreError as exc:
                        # Stored (by this call or an earlier one with the key):
                        # never "nothing stored", whatever the read met.
                        raise StoreTimeout(
                            f"append to {subject}: stored under the idempotency key (stream "
                            f"sequence {ack.seq}), but reading that commit failed ({exc}); "
                            "retry with the same key",
                            err_code=exc.err_code,
                        ) from exc
                    if earlier is not None:
                        return earlier
                    # The key's commit was deleted (an edition's purge) while
                    # the server still remembers its id: store under an id
                    # derived from it, the same for every repeat (one more
                    # per deletion, not counted as an attempt).
                    derived += 1
                    if derived > KEY_DERIVATIONS:
                        raise StoreError(
                            f"append to {subject}: the idempotency key's commits were "
                            f"deleted {KEY_DERIVATIONS} times within the duplicate window"
                        )
                    msg_id = headers[m.H_MSG_ID] = f"{key_id}.{ack.seq}"
                    attempt -= 1
                    continue
                return self._committed(subject, pos, count, ack.seq)
            if err.err_code == DUPLICATE_IN_PROCESS:
                # An earlier attempt is still being proposed: its fate is ours.
                unknown = True
                if observer is not None:
                    observer.retried(self._domain, "in_process")
                if attempt < attempts:
                    await asyncio.sleep(min(timeout, 0.005 * 2**attempt))
                    continue
                return await self._ours_or(
                    subject,
                    msg_id,
                    pos,
                    count,
                    own,
                    StoreTimeout(f"append to {subject}: an earlier attempt is still in process"),
                )
            if err.err_code in CONFLICT_CODES:
                if not unknown and _refusals.refutes(err, pos.stream_seq):
                    # A commit past the slot every attempt expected: none can land.
                    return await self._conflict(subject, pos)
                # An attempt may be stored (one went unanswered, or this refusal
                # came from a server that lags: _refusals): the leader's commits decide.
                found = await self._doubted(subject, msg_id, pos, count, own)
                if found is not None:
                    return found
                unknown = True
                if await doubts.pause():
                    attempt -= 1  # a re-check, not an attempt
                    continue
                wait = self._ctx.cfg.deposed_leader_wait
                # The next call looks the position up afresh (a stream made anew
                # leaves a cached position no read can lower).
                self._cache.drop(subject)
                raise StoreTimeout(
                    f"append to {subject}: outcome unknown: refused for {wait:g}s "
                    "(bus.nats.deposed_leader_wait), yet the leader's reads showed neither this commit nor a rival's "
                    "in its slot (a server behind this process's view, such as a deposed stream "
                    "leader, kept answering, or a rival's write never applied); retry with the "
                    "same idempotency key"
                )
            refused = err.as_error(f"append to {subject}")
            if unknown:
                raise unknown_outcome(f"append to {subject}", refused) from refused
            raise refused
        raise StoreTimeout(f"append to {subject}: no acknowledgement after {attempts} attempts")

    def _committed(self, subject: str, pos: Position, count: int, seq: int) -> AppendResult:
        nxt = pos.next_sequence + count
        self._cache.put(subject, Position(nxt, seq))
        return AppendResult(
            first_sequence=pos.next_sequence, next_sequence=nxt, stream_sequence=seq
        )

    async def _winner(self, subject: str, pos: Position) -> Stored | None:
        """The commit that took the slot after `pos` (read from the leader), or
        None while the slot is free.

        It is the first commit on the subject past `pos.stream_seq` (the
        expected last sequence every attempt carried); it is ours iff it
        carries our Nats-Msg-Id (random per publish, so identical commands
        from two writers in the same clock tick are still told apart). Called
        once an attempt may have been stored: a failed read is an unknown outcome.
        """
        try:
            return await self._wire.reads.leader_message(
                self._stream, subject, seq=pos.stream_seq + 1
            )
        except StoreError as exc:
            raise StoreTimeout(
                f"append to {subject}: outcome unknown: no acknowledgement, and "
                f"looking for the commit failed ({exc})",
                err_code=exc.err_code,
            ) from exc

    async def _ours_or(
        self, subject: str, msg_id: str, pos: Position, count: int, own: str, exc: StoreTimeout
    ) -> AppendResult:
        """The result if our commit took the slot after `pos`, else `exc`
        (the last attempt went unanswered: the outcome is unknown)."""
        winner = await self._winner(subject, pos)
        if winner is not None and winner.msg_id == msg_id:
            return self._found(subject, pos, count, winner, own)
        raise exc

    def _found(
        self, subject: str, pos: Position, count: int, landed: Stored, own: str
    ) -> AppendResult:
        """The result once the commit with our id has landed after `pos`. With
        an idempotency key (`own`: this call's append id) it may be another
        call's commit, so its own span is taken."""
        if own:
            return self._keys.result(subject, landed, own)
        return self._committed(subject, pos, count, landed.seq)

    async def _conflict(self, subject: str, pos: Position) -> Position:
        """The leader's position after a refusal that proved nothing of ours
        can land (for the error, or a new round of `expected=ANY`)."""
        try:
            real, _ = await self._settled_position(subject, pos)
        except StoreTimeout as exc:
            raise nothing_stored(f"append to {subject}", exc) from exc
        return real

    async def _settled_position(
        self, subject: str, pos: Position
    ) -> tuple[Position, Stored | None]:
        """The leader's position after a conflict on `pos`, and its last commit.

        In a cluster the server may refuse us (10164) while the rival's commit
        is still being applied, so the leader can briefly still show `pos`:
        re-read a few times, with a short backoff, until it moves.
        """
        real, tail = await leader_tail(self._ctx, subject, self._stream)
        for attempt in range(SETTLE_READS):
            if real.stream_seq != pos.stream_seq:
                break
            await asyncio.sleep(0.001 * 2**attempt)
            real, tail = await leader_tail(self._ctx, subject, self._stream)
        return real, tail

    async def _doubted(
        self, subject: str, msg_id: str, pos: Position, count: int, own: str
    ) -> AppendResult | Position | None:
        """After a refusal that proves nothing (`_refusals`): our result if the
        leader shows our commit in the slot after `pos`, its position if a
        rival's (or the subject was deleted: no attempt can land), None while
        in doubt: the slot still free, or the leader's answer behind `pos`
        (a deposed leader still answering; its "nothing there" proves nothing).

        No extra request when the rival's commit is the last one. The real
        leader may have stored this publish: a failed read is an unknown outcome.
        """
        try:
            real, tail = await self._settled_position(subject, pos)
        except StoreError as exc:
            raise unknown_outcome(f"append to {subject}", exc) from exc
        last = 0 if tail is None else tail.seq
        if last < pos.stream_seq:
            if tail is None and await _refusals.deleted(self._ctx, self._stream, subject, pos):
                self._cache.drop(subject)  # no read can lower it
                return real
            return None
        if tail is None or last == pos.stream_seq:  # a rival's write never applied
            return None
        if _refusals.opens_slot(tail, subject, pos):
            winner: Stored | None = tail
        else:
            winner = await self._winner(subject, pos)
        if winner is None:
            return None
        if winner.msg_id == msg_id:
            return self._found(subject, pos, count, winner, own)
        return real
