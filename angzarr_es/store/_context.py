"""What the stores of one client share, and the position lookups both the
append path and the read path make."""

from __future__ import annotations

from dataclasses import dataclass, field

from angzarr_es import _codec
from angzarr_es._nats import Wire
from angzarr_es._observe import Observer
from angzarr_es.config import NatsConfig
from angzarr_es.store._cache import NEW, Position, PositionCache, Turns
from angzarr_es.store._commits import Guess
from angzarr_es.store._hot import HotCache
from angzarr_es.subjects import Subjects

__all__ = ["StoreContext", "fresh_position", "leader_position", "lookup"]


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
    subjects: Subjects = field(init=False)

    def __post_init__(self) -> None:
        self.subjects = Subjects(self.cfg.subject_prefix)

    @property
    def stream(self) -> str:
        return self.cfg.stream_name


async def lookup(ctx: StoreContext, subject: str) -> Position:
    """The aggregate's position from its last commit (any replica)."""
    last = await ctx.wire.reads.direct_last(ctx.stream, subject)
    return _remember(ctx, subject, None if last is None else last[:2])


async def leader_position(ctx: StoreContext, subject: str) -> Position:
    """The aggregate's position as the stream leader knows it."""
    last = await ctx.wire.reads.leader_last(ctx.stream, subject)
    return _remember(ctx, subject, last)


async def fresh_position(ctx: StoreContext, subject: str) -> Position:
    """The aggregate's position, never older than what this process has seen."""
    cached = ctx.cache.get(subject)
    pos = await lookup(ctx, subject)
    if cached is not None and cached.stream_seq > pos.stream_seq:
        pos = await leader_position(ctx, subject)
    return pos


def _remember(ctx: StoreContext, subject: str, last: tuple[bytes, int] | None) -> Position:
    if last is None:
        return NEW
    payload, seq = last
    book = _codec.decode_book(payload, subject=subject, stream_sequence=seq)
    pos = Position(_codec.commit_span(book, subject=subject, stream_sequence=seq)[1], seq)
    ctx.cache.put(subject, pos)
    return pos
