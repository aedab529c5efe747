"""What the stores of one client share, the check of the event stream's
settings they make once, and the position lookups both the append path and
the read path make."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import NamedTuple

from angzarr_es import _codec, _provision
from angzarr_es._nats import Wire
from angzarr_es._nats.errors import PROVISION_HINT, STREAM_NOT_FOUND
from angzarr_es._observe import Observer
from angzarr_es.config import NatsConfig
from angzarr_es.errors import PermissionDenied, StoreError, StoreUnavailable, StreamConfigError
from angzarr_es.store._cache import NEW, Position, PositionCache, Turns
from angzarr_es.store._commits import Guess
from angzarr_es.store._hot import HotCache
from angzarr_es.subjects import Subjects

__all__ = [
    "StoreContext",
    "check_stream",
    "fresh_position",
    "leader_position",
    "lookup",
    "provisioned",
]

log = logging.getLogger("angzarr_es")


class Verdict(NamedTuple):
    """What the event stream's settings mean for the store."""

    deleting: str
    """Why the stream can delete appended events ("" if it keeps them all)."""
    direct: bool
    """Whether it serves Direct Get (`allow_direct`)."""
    exists: bool = True


KEEPS_ALL = Verdict("", direct=True)
MISSING = Verdict("", direct=False, exists=False)


@dataclass(slots=True)
class StoreContext:
    """What every store of one client shares."""

    wire: Wire
    cfg: NatsConfig
    cache: PositionCache
    observer: Observer | None = None
    # Decoded histories of the aggregates this client works on (off: 0 bytes).
    hot: HotCache = field(default_factory=lambda: HotCache(0))
    # Per domain: the event type its next commit is expected to hold (_commits).
    guesses: dict[str, Guess] = field(default_factory=dict)
    # Per subject: the turn an `expected=ANY` append waits for.
    turns: Turns = field(default_factory=Turns)
    # The event stream's settings, looked at once (check_stream): appends go
    # ahead once `writable`, reads once `readable`.
    verdict: Verdict | None = None
    writable: bool = False
    readable: bool = False
    looking: asyncio.Task[Verdict | None] | None = None
    subjects: Subjects = field(init=False)

    def __post_init__(self) -> None:
        self.subjects = Subjects(self.cfg.subject_prefix)

    @property
    def stream(self) -> str:
        return self.cfg.stream_name


async def check_stream(ctx: StoreContext, *, write: bool) -> None:
    """Judge the event stream's settings before a client's first append
    (`write`) or read: one STREAM.INFO, shared by concurrent callers, and
    remembered. A stream without `allow_direct` is read from its leader. A
    stream that can delete events is refused for appends (and asked again at
    the next append, which a provision may have fixed meanwhile) or, with
    `stream_check = "warn"`, written to after one warning. When the settings
    cannot be read (no answer), nothing is decided: the operation goes on
    and its own request tells.

    Raises:
        StreamConfigError: `write`, the stream can delete events, and
            `stream_check` is "refuse" (nothing was sent).
        StoreUnavailable: the stream does not exist (nothing was sent).
    """
    verdict = ctx.verdict
    if verdict is None or (write and verdict.deleting):
        task = ctx.looking
        if task is None or task.done():
            task = ctx.looking = asyncio.get_running_loop().create_task(_look(ctx))
        verdict = await asyncio.shield(task)
        if verdict is None:
            return
        if not verdict.exists:
            raise StoreUnavailable(
                f"stream {ctx.stream} does not exist: create it with {PROVISION_HINT}",
                code=503,
                err_code=STREAM_NOT_FOUND,
            )
        if ctx.verdict is None or ctx.verdict.direct != verdict.direct:
            ctx.wire.reads.use_leader(ctx.stream, not verdict.direct)
            if not verdict.direct:
                log.warning(
                    "stream %s does not serve Direct Get (allow_direct is off): reads go to "
                    "its leader, one request per commit; turn it on with %s",
                    ctx.stream,
                    PROVISION_HINT,
                )
        ctx.verdict = verdict
    ctx.readable = True
    if not write:
        return
    if verdict.deleting:
        if ctx.cfg.stream_check != "warn":
            raise StreamConfigError(verdict.deleting)
        log.warning("%s", verdict.deleting)
    ctx.writable = True


def provisioned(ctx: StoreContext) -> None:
    """The event stream was just brought to the store's settings."""
    ctx.verdict = KEEPS_ALL
    ctx.writable = ctx.readable = True
    ctx.wire.reads.use_leader(ctx.stream, False)


async def _look(ctx: StoreContext) -> Verdict | None:
    try:
        info = await ctx.wire.js.stream_info(ctx.stream, what="event stream")
    except PermissionDenied as exc:
        # An account that may not ask: the store cannot tell, and says so once.
        log.warning("cannot check the settings of stream %s: %s", ctx.stream, exc)
        return KEEPS_ALL
    except StoreError as exc:
        log.debug("checking stream %s: %s", ctx.stream, exc)
        return None
    if info is None:
        return MISSING
    current = info.config or {}
    found = _provision.deleting_settings(ctx.cfg, current, ctx.wire.server_version)
    deleting = _provision.explain_deleting(ctx.stream, found, current) if found else ""
    return Verdict(deleting, direct=bool(current.get("allow_direct", False)))


async def lookup(ctx: StoreContext, subject: str) -> Position:
    """The aggregate's position from its last commit (any replica)."""
    last = await ctx.wire.reads.direct_last(ctx.stream, subject)
    return await _remember(ctx, subject, None if last is None else last[:2])


async def leader_position(ctx: StoreContext, subject: str) -> Position:
    """The aggregate's position as the stream leader knows it."""
    last = await ctx.wire.reads.leader_last(ctx.stream, subject)
    return await _remember(ctx, subject, last)


async def fresh_position(ctx: StoreContext, subject: str) -> Position:
    """The aggregate's position, never older than what this process has seen."""
    cached = ctx.cache.get(subject)
    pos = await lookup(ctx, subject)
    if cached is not None and cached.stream_seq > pos.stream_seq:
        pos = await leader_position(ctx, subject)
    return pos


async def _remember(ctx: StoreContext, subject: str, last: tuple[bytes, int] | None) -> Position:
    if last is None:
        return NEW
    payload, seq = last
    book = _codec.decode_book(payload, subject=subject, stream_sequence=seq)
    if _codec.elsewhere(book, subject):
        nxt = await _timeline_next(ctx, subject, seq)
    else:
        nxt = _codec.commit_span(book, subject=subject, stream_sequence=seq)[1]
    pos = Position(nxt, seq)
    ctx.cache.put(subject, pos)
    return pos


async def _timeline_next(ctx: StoreContext, subject: str, last: int) -> int:
    """The next sequence of the subject's own timeline when its last message
    (at stream sequence `last`) is another edition's commit (angzarr's bus
    puts every edition on one subject): the subject's commits are read up to
    `last` (Direct Get pages, then the leader for what a lagging replica
    missed), the last one of the timeline tells. Costs a read of the whole
    subject, once: the position is cached, and this process's own appends
    keep it.

    Raises:
        CodecError: a commit of the timeline is not a commit (see `commit_span`).
    """
    reads = ctx.wire.reads
    nxt, start = 0, 1
    while start <= last:
        payloads, end, more = await reads.direct_batch(ctx.stream, subject, start, 1000, 1 << 21)
        if not payloads:
            break
        seqs = await reads.direct_sequences(ctx.stream, subject, start, len(payloads))
        for payload, seq in zip(payloads, seqs, strict=False):
            nxt = _timeline_step(payload, subject, seq, nxt)
        start = end + 1
        if not more:
            break
    while start <= last:
        got = await reads.leader_next(ctx.stream, subject, start)
        if got is None:
            break
        nxt = _timeline_step(got[0], subject, got[1], nxt)
        start = got[1] + 1
    return nxt


def _timeline_step(payload: bytes, subject: str, seq: int, nxt: int) -> int:
    book = _codec.decode_book(payload, subject=subject, stream_sequence=seq)
    if _codec.elsewhere(book, subject):
        return nxt
    return _codec.commit_span(book, subject=subject, stream_sequence=seq)[1]
