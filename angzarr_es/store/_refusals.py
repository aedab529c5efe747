"""What a refused publish proves, and what it does not.

A publish carries the subject's expected last stream sequence; a refusal
(10071 "wrong last sequence: N", 10164) usually means a rival's commit holds
the slot. But in a cluster every server that believes it leads the stream
answers: a leader that was paused (SIGSTOP, a frozen VM) while the others
elected a new one keeps answering from its stale copy until it notices, which
in nats-server is when a peer on the higher term answers its first raft
heartbeat (sent once it has sent nothing for 1 s; at once when it resumes
from a longer pause). Meanwhile the new leader stores the same publish, and
the client takes whichever answer comes first: the stale one, which needs no
raft round trip. Found by the nemesis (docs/reliability.md).

So a refusal proves that no attempt can land only when it names a last
sequence past the one every attempt expected (`refutes`): that commit is
stored on every server that has it, and it is not ours. Anything else is
checked against the leader's commits (`Appender._doubted`; the eventsourcing
recorders' `Writer._holder`), and re-checked for a while when they show
neither ours nor a rival's in the slot (`Doubts`); a subject that reads as
empty is taken as deleted only from a server that has the stream up to the
commit this process saw there (`deleted`).

Reads are answered by such a leader too, so a read showing the aggregate
behind `expected` proves nothing to a call with an idempotency key: its
command, if an earlier call stored it, sits at `expected` (`caught_up`).
"""

from __future__ import annotations

import asyncio

from angzarr_es import _codec
from angzarr_es._nats import Stored
from angzarr_es._nats import messages as m
from angzarr_es._nats.errors import WRONG_LAST_SEQUENCE
from angzarr_es.errors import StoreError, StoreTimeout
from angzarr_es.store._cache import Position
from angzarr_es.store._context import StoreContext, leader_position

__all__ = ["Doubts", "caught_up", "deleted", "opens_slot", "refutes"]

# How long a refusal that proves nothing is re-checked (the publish sent again,
# with the same id) before the outcome is reported unknown is `[bus.nats]
# deposed_leader_wait`, 2 s by default: nats-server's raft heartbeat is 1 s, so
# a deposed leader that runs learns of the new term within about a second; the
# rest is margin for a loaded host.


def refutes(err: m.ApiError, expected: int) -> bool:
    """Whether a conflict refusal proves that no attempt expecting the last
    stream sequence `expected` can land: a 10071 naming a last sequence past
    it. (For an atomic batch, whose refusal does not say which subject it is
    about, `expected` is the highest any of its subjects expected.)"""
    if err.err_code != WRONG_LAST_SEQUENCE:
        return False
    last = err.description.rpartition(":")[2].strip()
    return last.isdigit() and int(last) > expected


class Doubts:
    """Refusals that proved nothing, and the leader's reads after them
    neither: each is re-checked by sending the publish again (same id, so it
    is stored once) after a pause of 10 ms, 20 ms, ... (0.25 s at most),
    until `wait` seconds (`deposed_leader_wait`) have passed since the first;
    then the outcome is unknown."""

    __slots__ = ("_count", "_since", "_wait")

    def __init__(self, wait: float) -> None:
        self._wait = wait
        self._since: float | None = None
        self._count = 0

    async def pause(self) -> bool:
        """Pause before the next re-check; False at once when `wait` has passed."""
        now = asyncio.get_running_loop().time()
        if self._since is None:
            self._since = now
        self._count += 1
        if now - self._since >= self._wait:
            return False
        await asyncio.sleep(min(0.25, 0.005 * 2**self._count))
        return True


def opens_slot(tail: Stored, subject: str, pos: Position) -> bool:
    """Whether `tail`, a commit on `subject`, is the first one after `pos`
    (it starts at `pos.next_sequence`): then it is the one that took the slot."""
    book = _codec.decode_book(tail.data, subject=subject, stream_sequence=tail.seq)
    if _codec.elsewhere(book, subject):  # another edition's (angzarr's bus)
        return False
    first, _ = _codec.commit_span(book, subject=subject, stream_sequence=tail.seq)
    return first == pos.next_sequence


async def deleted(ctx: StoreContext, stream: str, subject: str, pos: Position) -> bool:
    """Whether `subject`, on which this process saw the commit at
    `pos.stream_seq`, was emptied since (its edition deleted): one STREAM.INFO
    whose answer shows the stream up to that sequence (so not a stale
    server's) and no message on the subject. False when it cannot tell."""
    try:
        info = await ctx.wire.js.subjects_page(stream, subject, 0, ctx.wire.timeout)
    except StoreError:
        return False
    state = info.state
    return state.last_seq >= pos.stream_seq and not (state.subjects or {}).get(subject)


async def caught_up(
    ctx: StoreContext,
    stream: str,
    subject: str,
    expected: int,
    pos: Position,
    seen: Position | None,
) -> Position:
    """For an append with an idempotency key: `pos`, a leader read showing
    the aggregate behind `expected`, read again until it is not.

    Every attempt of a command retried with the same `expected` lands at
    `expected`: if the key's command is stored, the aggregate is past it. A
    read behind it comes from a server behind the leader (a deposed leader
    still answering), or `expected` is ahead of the aggregate, and while a
    deposed leader may answer no read tells which. So the leader is read
    again, paced as other doubts (`Doubts`), for up to `deposed_leader_wait`,
    the time the write path gives a deposed leader to stop answering: a read
    still behind after it is the leader's, so the command is not stored and
    `expected` is ahead (the caller's ConcurrencyError, as the in-memory store
    gives it at once). An empty subject on which this process saw the commit
    at `seen.stream_seq` is taken as deleted from one STREAM.INFO (`deleted`):
    no wait. Found by the nemesis: a keyed retry got ConcurrencyError although its command was
    stored, its reads (and the key search after them) answered by a deposed
    leader's copy.

    Returns the last read: at or past `expected`, or behind it after the
    wait (the cached position dropped).

    Raises:
        StoreTimeout: a read failed: whether the key's command is stored is unknown.
    """
    wait = ctx.cfg.deposed_leader_wait
    doubts = Doubts(wait)
    while pos.next_sequence < expected:
        if (
            not pos.stream_seq
            and seen is not None
            and seen.stream_seq
            and await deleted(ctx, stream, subject, seen)
        ):
            ctx.cache.drop(subject)  # no read can lower it
            return pos
        if not await doubts.pause():
            # `expected` is ahead. The next call looks the position up afresh
            # (a stream made anew leaves a cached position no read can lower).
            ctx.cache.drop(subject)
            return pos
        try:
            pos = await leader_position(ctx, subject, stream)
        except StoreError as exc:
            raise StoreTimeout(
                f"append to {subject}: a read showed the aggregate behind `expected`, and "
                f"reading it again failed ({exc}); whether the idempotency key's command is "
                "stored is unknown: retry with the same key",
                err_code=exc.err_code,
            ) from exc
    return pos
