"""What the stores of one client share, the check of each event stream's
settings they make once, and the position lookups both the append path and
the read path make."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import NamedTuple

from angzarr_es import _codec, _provision
from angzarr_es._nats import Stored, Wire
from angzarr_es._nats.errors import PROVISION_HINT, STREAM_NOT_FOUND
from angzarr_es._observe import Observer
from angzarr_es._streams import Streams
from angzarr_es._types import Clock, utc_now
from angzarr_es.config import NatsConfig
from angzarr_es.errors import PermissionDenied, StoreError, StoreUnavailable, StreamConfigError
from angzarr_es.store._cache import NEW, Position, PositionCache, Turns
from angzarr_es.store._commits import Guess
from angzarr_es.store._hot import HotCache
from angzarr_es.store._whole import subject_books
from angzarr_es.subjects import Subjects

__all__ = [
    "StoreContext",
    "StreamState",
    "check_stream",
    "fresh_position",
    "leader_position",
    "leader_tail",
    "lookup",
    "provisioned",
]

log = logging.getLogger("angzarr_es")


class Verdict(NamedTuple):
    """What an event stream's settings mean for the store."""

    deleting: str
    """Why the stream can delete appended events ("" if it keeps them all)."""
    direct: bool
    """Whether it serves Direct Get (`allow_direct`)."""
    exists: bool = True
    foreign: str = ""
    """Why the stream is not the domain's (per-domain layout: it captures
    another spelling of the domain), "" if it is."""


KEEPS_ALL = Verdict("", direct=True)
MISSING = Verdict("", direct=False, exists=False)


@dataclass(slots=True)
class StreamState:
    """What a client knows of one event stream (per domain in per-domain
    layout), looked at once (check_stream): appends go ahead once
    `writable`, reads once `readable`."""

    stream: str
    domain: str
    """The domain it holds in per-domain layout ("" in single layout)."""
    verdict: Verdict | None = None
    writable: bool = False
    readable: bool = False
    looking: asyncio.Task[Verdict | None] | None = None


@dataclass(slots=True)
class StoreContext:
    """What every store of one client shares."""

    wire: Wire
    cfg: NatsConfig
    cache: PositionCache
    observer: Observer | None = None
    # Decoded histories of the aggregates this client works on (off: 0 bytes).
    hot: HotCache = field(default_factory=lambda: HotCache(0))
    # What commits and snapshots are stamped with (`connect(clock=...)`).
    clock: Clock = utc_now
    # Per domain: the event type its next commit is expected to hold (_commits).
    guesses: dict[str, Guess] = field(default_factory=dict)
    # Per subject: the turn an `expected=ANY` append waits for.
    turns: Turns = field(default_factory=Turns)
    # Per domain ("" for all in single layout): its event stream's state.
    states: dict[str, StreamState] = field(default_factory=dict)
    # Per-domain layout: whether the correlation index's stream is known to exist.
    index_ready: bool = False
    subjects: Subjects = field(init=False)
    streams: Streams = field(init=False)

    def __post_init__(self) -> None:
        self.subjects = Subjects(self.cfg.subject_prefix)
        self.streams = Streams(self.cfg)

    def state(self, domain: str) -> StreamState:
        """The state of the stream holding `domain` (validated)."""
        key = domain if self.streams.per_domain else ""
        found = self.states.get(key)
        if found is None:
            found = self.states[key] = StreamState(self.streams.events(domain), key)
        return found


async def check_stream(ctx: StoreContext, state: StreamState, *, write: bool) -> bool:
    """Judge an event stream's settings before a client's first append
    (`write`) or read of it: one STREAM.INFO, shared by concurrent callers,
    and remembered. A stream without `allow_direct` is read from its leader.
    A stream that can delete events is refused for appends (and asked again
    at the next append, which a provision may have fixed meanwhile) or, with
    `stream_check = "warn"`, written to after one warning. When the settings
    cannot be read (no answer), nothing is decided: the operation goes on
    and its own request tells.

    In per-domain layout a missing domain stream is created by the first
    append (`_provision.create_domain_stream`), and a read of it returns
    False: the caller answers as for an aggregate with no events (and the
    next read asks again).

    Raises:
        StreamConfigError: `write`, the stream can delete events, and
            `stream_check` is "refuse" (nothing was sent); or the stream
            holds another spelling of the domain.
        StoreUnavailable: single layout: the stream does not exist (nothing
            was sent).
    """
    verdict = state.verdict
    if verdict is None or (write and verdict.deleting):
        verdict = await _judge(ctx, state)
        if verdict is None:
            return True
        if not verdict.exists and ctx.streams.per_domain:
            if not write:
                return False
            await _provision.create_domain_stream(ctx.wire, ctx.cfg, state.domain)
            verdict = await _judge(ctx, state)
            if verdict is None:
                return True
        if not verdict.exists:
            raise StoreUnavailable(
                f"stream {state.stream} does not exist: create it with {PROVISION_HINT}",
                code=503,
                err_code=STREAM_NOT_FOUND,
            )
        if verdict.foreign:
            raise StreamConfigError(verdict.foreign)
        if state.verdict is None or state.verdict.direct != verdict.direct:
            ctx.wire.reads.use_leader(state.stream, not verdict.direct)
            if not verdict.direct:
                log.warning(
                    "stream %s does not serve Direct Get (allow_direct is off): reads go to "
                    "its leader, one request per commit; turn it on with %s",
                    state.stream,
                    PROVISION_HINT,
                )
        state.verdict = verdict
    state.readable = True
    if not write:
        return True
    if verdict.deleting:
        if ctx.cfg.stream_check != "warn":
            raise StreamConfigError(verdict.deleting)
        log.warning("%s", verdict.deleting)
    state.writable = True
    return True


async def _judge(ctx: StoreContext, state: StreamState) -> Verdict | None:
    task = state.looking
    if task is None or task.done():
        task = state.looking = asyncio.get_running_loop().create_task(_look(ctx, state))
    return await asyncio.shield(task)


def provisioned(ctx: StoreContext, domains: list[str] | None = None) -> None:
    """The event stream (single layout), or the streams of `domains`
    (per-domain layout), were just brought to the store's settings."""
    for domain in [""] if not ctx.streams.per_domain else domains or []:
        state = ctx.state(domain)
        state.verdict = KEEPS_ALL
        state.writable = state.readable = True
        ctx.wire.reads.use_leader(state.stream, False)
    if ctx.streams.per_domain:
        ctx.index_ready = True


async def _look(ctx: StoreContext, state: StreamState) -> Verdict | None:
    stream = state.stream
    try:
        info = await ctx.wire.js.stream_info(stream, what="event stream")
    except PermissionDenied as exc:
        # An account that may not ask: the store cannot tell, and says so once.
        log.warning("cannot check the settings of stream %s: %s", stream, exc)
        return KEEPS_ALL
    except StoreError as exc:
        log.debug("checking stream %s: %s", stream, exc)
        return None
    if info is None:
        return MISSING
    current = info.config or {}
    found = _provision.deleting_settings(ctx.cfg, current, ctx.wire.server_version, state.domain)
    deleting = _provision.explain_deleting(stream, found, current) if found else ""
    direct = bool(current.get("allow_direct", False))
    foreign = ""
    if state.domain:
        have = list(current.get("subjects") or [])
        if not set(ctx.streams.domain_subjects(state.domain)) <= set(have):
            foreign = (
                f"stream {stream} does not capture domain {state.domain!r} (its subjects: "
                f"{have}): in the per-domain layout domains that differ only in case "
                "share one stream name; use one spelling of the domain"
            )
    return Verdict(deleting, direct=direct, foreign=foreign)


async def lookup(ctx: StoreContext, subject: str, stream: str = "") -> Position:
    """The aggregate's position from its last commit (any replica); `stream`
    holds `subject` (by default the one the layout says)."""
    stream = stream or ctx.streams.of_subject(subject)
    last = await ctx.wire.reads.direct_last(stream, subject)
    return await _remember(ctx, subject, None if last is None else last[:2], stream)


async def leader_position(ctx: StoreContext, subject: str, stream: str = "") -> Position:
    """The aggregate's position as the stream leader knows it."""
    stream = stream or ctx.streams.of_subject(subject)
    last = await ctx.wire.reads.leader_last(stream, subject)
    return await _remember(ctx, subject, last, stream)


async def leader_tail(
    ctx: StoreContext, subject: str, stream: str = ""
) -> tuple[Position, Stored | None]:
    """Like `leader_position`, with the last commit as read (its ids say whose it is)."""
    stream = stream or ctx.streams.of_subject(subject)
    last = await ctx.wire.reads.leader_tail(stream, subject)
    pos = await _remember(ctx, subject, None if last is None else (last.data, last.seq), stream)
    return pos, last


async def fresh_position(ctx: StoreContext, subject: str, stream: str = "") -> Position:
    """The aggregate's position, never older than what this process has seen."""
    cached = ctx.cache.get(subject)
    pos = await lookup(ctx, subject, stream)
    if cached is not None and cached.stream_seq > pos.stream_seq:
        pos = await leader_position(ctx, subject, stream)
    return pos


async def _remember(
    ctx: StoreContext, subject: str, last: tuple[bytes, int] | None, stream: str
) -> Position:
    if last is None:
        return NEW
    payload, seq = last
    book = _codec.decode_book(payload, subject=subject, stream_sequence=seq)
    if _codec.elsewhere(book, subject):
        nxt = await _timeline_next(ctx, stream, subject, seq)
    else:
        nxt = _codec.commit_span(book, subject=subject, stream_sequence=seq)[1]
    pos = Position(nxt, seq)
    ctx.cache.put(subject, pos)
    return pos


async def _timeline_next(ctx: StoreContext, stream: str, subject: str, last: int) -> int:
    """The next sequence of the subject's own timeline when its last message
    (at stream sequence `last`) is another edition's commit (angzarr's bus
    puts every edition on one subject): the subject's commits up to `last`
    are read, the last one of the timeline tells. Costs a read of the whole
    subject, once: the position is cached, and this process's own appends
    keep it.

    Raises:
        CodecError: a commit of the timeline is not a commit (see `commit_span`).
    """
    nxt = 0
    for seq, book in await subject_books(ctx.wire, stream, subject, last):
        if not _codec.elsewhere(book, subject):
            nxt = _codec.commit_span(book, subject=subject, stream_sequence=seq)[1]
    return nxt
