"""Idempotency keys: finding the commit stored under an append's key (this
call's, or an earlier call's with the same key), and the result it gives.

A key's commit carries the key's Nats-Msg-Id (scoped to the aggregate's
subject) and the call's own Angzarr-Append-Id: the result is a duplicate
unless the commit is this call's own.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from angzarr_es import _codec
from angzarr_es._nats import Stored
from angzarr_es._types import ANY, AppendResult, ExpectedVersion
from angzarr_es.errors import InvalidSnapshot, StoreTimeout
from angzarr_es.store import _refusals, _snapshots
from angzarr_es.store._cache import Position
from angzarr_es.store._context import StoreContext

__all__ = ["KEY_SEARCH", "KEY_SKEW", "Keyed", "Keys"]

# Looking for an idempotency key's commit: from this much before the server's
# duplicate window (clock skew between client and server), and at most this
# many commits of the aggregate read one by one.
KEY_SKEW = 10.0
KEY_SEARCH = 1000


class Keyed(NamedTuple):
    """An append's idempotency key as sent: the commit's Nats-Msg-Id, and this
    call's own Angzarr-Append-Id."""

    msg_id: str
    own: str


class Keys:
    """Commits stored under idempotency keys, on the subjects of one stream."""

    __slots__ = ("_ctx", "_stream")

    def __init__(self, ctx: StoreContext, stream: str) -> None:
        self._ctx = ctx
        self._stream = stream

    async def find(
        self, subject: str, keyed: Keyed, expected: ExpectedVersion, actual: int
    ) -> AppendResult | None:
        """The commit stored on `subject` under this idempotency key (this
        call's own, or an earlier call's): the one at `expected` first, where
        every attempt of a command retried with the same `expected` lands, then
        among the first KEY_SEARCH commits of the server's duplicate window.

        The nemesis found why the first look is needed: on a busy aggregate the
        window held more than KEY_SEARCH commits, and a command whose earlier
        calls had timed out was refused (ConcurrencyError) although stored.
        """
        msg_id = keyed.msg_id
        if expected is not ANY:
            found = await self._at_sequence(subject, expected)
            if found is None and actual > expected:
                # A read showed the aggregate past `expected`, this one shows no
                # commit there: a server behind the leader answered (_refusals).
                raise StoreTimeout(
                    f"append to {subject}: the aggregate was read at {actual}, then without "
                    f"a commit holding event {expected} (a server behind the stream leader "
                    "answered)"
                )
            if found is not None and (
                found.msg_id == msg_id or found.msg_id.startswith(msg_id + ".")
            ):
                return self.result(subject, found, keyed.own)
        window = self._ctx.cfg.duplicate_window + KEY_SKEW
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=window)
        stream = self._stream
        found = await self._ctx.wire.reads.leader_message(
            stream, subject, start_time=since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        )
        for _ in range(KEY_SEARCH):
            if found is None:
                return None
            if found.msg_id == msg_id or found.msg_id.startswith(msg_id + "."):
                return self.result(subject, found, keyed.own)
            found = await self._ctx.wire.reads.leader_message(stream, subject, seq=found.seq + 1)
        return None

    async def _at_sequence(self, subject: str, sequence: int) -> Stored | None:
        """The commit holding event `sequence` (a binary search of leader
        reads), or None if the aggregate has no such event."""
        stream = self._stream
        try:
            seq = await _snapshots.covering_commit(self._ctx.wire, stream, subject, sequence)
        except InvalidSnapshot:
            return None
        return await self._ctx.wire.reads.leader_message(stream, subject, seq=seq)

    async def earlier(self, subject: str, seq: int, own: str) -> AppendResult | None:
        """The result of the commit stored on `subject` at stream sequence
        `seq` under an idempotency key (None if it is gone: the subject shows
        later commits instead, or `_refusals.deleted`)."""
        found = await self._ctx.wire.reads.leader_message(self._stream, subject, seq=seq)
        if found is None and not await _refusals.deleted(
            self._ctx, self._stream, subject, Position(0, seq)
        ):
            raise StoreTimeout(f"no commit at {seq}: a server behind the stream leader answered")
        if found is None or found.seq != seq:
            return None
        return self.result(subject, found, own)

    def result(self, subject: str, stored: Stored, own: str) -> AppendResult:
        """The result of a commit stored under an idempotency key: a duplicate
        unless it carries `own`, this call's append id."""
        seq = stored.seq
        book = _codec.decode_book(stored.data, subject=subject, stream_sequence=seq)
        first, nxt = _codec.commit_span(book, subject=subject, stream_sequence=seq)
        duplicate = stored.append_id != own
        if not duplicate:  # this call's own commit: where the aggregate now stands
            self._ctx.cache.put(subject, Position(nxt, seq))
        return AppendResult(
            first_sequence=first, next_sequence=nxt, stream_sequence=seq, duplicate=duplicate
        )
