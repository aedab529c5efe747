"""The targets: each one's rule, the ratio (or figure) measured against it, and
whether it was met."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from benchmarks.contenders import (
    CACHED_PEERS,
    FLOOR,
    FLOOR_DECODED,
    NAIVE,
    OURS,
    OURS_HOT,
    OURS_ONE,
    OURS_PER_DOMAIN,
    PEERS,
    POSTGRES,
)
from benchmarks.harness import Stats
from benchmarks.layouts import OPS as LAYOUT_OPS

CACHED = "append 1 event (cached)"
TEN = "append 10 events (cached)"


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """One target: its rule (`name`), the figure measured, its limit, and whether
    it was met; a `context` row is reported beside them, not judged."""

    name: str
    measured: float
    limit: float
    unit: str
    met: bool
    detail: str = ""
    context: bool = False


def targets(
    results: Sequence[Stats],
    memory: dict[str, dict[str, float]],
    cache_memory: dict[str, dict[str, float]] | None = None,
    *,
    sync_always: bool = False,
) -> list[Target]:
    """Each of the issues' targets with its measured ratio, in the table's order; a
    target whose rows were not measured (a smaller preset, a missing peer) is left out.

    With `sync_always` (every ack after an fsync, like the peers' commits) the
    appends are judged against PostgreSQL's and the floor's p99; otherwise
    those comparisons are context (a page-cache write against an fsync).
    """
    table = _Table(results)
    _appends(table, sync_always)
    _loads(table)
    _hot(table)
    _layouts(table)
    _writers(table, results)
    _peers(table, sync_always)
    _memory(table, memory)
    _cache_memory(table, cache_memory or {})
    return table.out


class _Table:
    """The results looked up by operation and contender, and the targets so far."""

    def __init__(self, results: Sequence[Stats]) -> None:
        self.by = {(s.op, s.contender): s for s in results}
        self.out: list[Target] = []
        self.context = False

    def get(self, op: str, contender: str) -> Stats | None:
        return self.by.get((op, contender))

    def ratio(
        self,
        name: str,
        num: Stats | None,
        den: Stats | None,
        field: str,
        limit: float,
        *,
        at_least: bool = False,
    ) -> None:
        """`num`'s `field` over `den`'s: at most `limit`, or `at_least` it."""
        if num is None or den is None:
            return
        a, b = getattr(num, field), getattr(den, field)
        value = a / b if b else float("inf")
        self.out.append(
            Target(
                name=name,
                measured=round(value, 3),
                limit=limit,
                unit="x",
                met=value >= limit if at_least else value <= limit,
                detail=f"{num.contender} {field} {a:.1f} / {den.contender} {b:.1f}",
                context=self.context,
            )
        )

    def below(
        self, name: str, value: float, limit: float, unit: str, *, at_most: bool = False
    ) -> None:
        """A figure that must stay under `limit` (or at it, `at_most`)."""
        self.out.append(
            Target(
                name=name,
                measured=round(value, 1),
                limit=limit,
                unit=unit,
                met=value <= limit if at_most else value < limit,
                context=self.context,
            )
        )


def _appends(table: _Table, sync_always: bool) -> None:
    ours1, floor1 = table.get(CACHED, OURS), table.get(CACHED, FLOOR)
    table.ratio("append (cached) p50 <= 1.10x floor p50", ours1, floor1, "p50", 1.10)
    # Restated (issue 17): with every ack behind an fsync, the p99 is the
    # disk's and is judged against the floor's, not against 1 ms.
    table.ratio("append (cached) p99 <= 1.5x floor p99", ours1, floor1, "p99", 1.5)
    if ours1 is not None:
        table.context = sync_always
        table.below("append (cached) p99 < 1 ms", ours1.p99, 1000.0, "µs")
        table.context = False
    table.ratio(
        "append (cached), hot cache on: p50 <= 1.10x floor p50",
        table.get(CACHED, OURS_HOT),
        floor1,
        "p50",
        1.10,
    )
    table.ratio(
        "append 10 events p50 <= 1.3x append 1 p50 (interleaved)",
        table.get(TEN, OURS),
        table.get(TEN, OURS_ONE),
        "p50",
        1.3,
    )


def _loads(table: _Table) -> None:
    for size in (100, 1000):
        for per_commit in (1, 10):
            op = f"load {size} events ({per_commit}/commit)"
            ours = table.get(op, OURS)
            table.ratio(
                f"{op}: p50 <= 1.3x Direct Get floor", ours, table.get(op, FLOOR), "p50", 1.3
            )
            table.ratio(
                f"{op}: p50 <= 1.3x Direct Get floor that also decodes each event",
                ours,
                table.get(op, FLOOR_DECODED),
                "p50",
                1.3,
            )
            table.ratio(
                f"{op}: naive ordered consumer >= 3x slower (p50)",
                table.get(op, NAIVE),
                ours,
                "p50",
                3.0,
                at_least=True,
            )


def _writers(table: _Table, results: Sequence[Stats]) -> None:
    writers = [s for s in results if s.op.endswith("concurrent writers")]
    if writers:
        op = writers[0].op
        table.ratio(
            f"{op}: >= 0.8x raw pipelined throughput",
            table.get(op, OURS),
            table.get(op, FLOOR),
            "ops_per_s",
            0.8,
            at_least=True,
        )


def _hot(table: _Table) -> None:
    for size in (100, 1000):
        op = f"hot load {size} events (1/commit)"
        ours = table.get(op, OURS_HOT)
        table.ratio(
            f"{op}: p50 <= 1.3x the raw request floor (one round trip)",
            ours,
            table.get(op, FLOOR),
            "p50",
            1.3,
        )
        if size == 100:
            for peer in PEERS:
                table.ratio(
                    f"{op}: p50 at or below {peer}'s uncached load (ratio <= 1)",
                    ours,
                    table.get(op, peer),
                    "p50",
                    1.0,
                )
        # eventsourcing's own aggregate cache (fast-forward, deep copy): a
        # peer row, reported whichever way it goes.
        table.context = True
        for peer in CACHED_PEERS:
            table.ratio(f"{op}: p50 against {peer}", ours, table.get(op, peer), "p50", 1.0)
        table.context = False


def _layouts(table: _Table) -> None:
    for op in LAYOUT_OPS:
        table.ratio(
            f"{op}: per-domain p50 <= 1.1x single p50",
            table.get(op, OURS_PER_DOMAIN),
            table.get(op, OURS),
            "p50",
            1.1,
        )


def _peers(table: _Table, sync_always: bool) -> None:
    for peer in PEERS:
        # Restated (issue 17): appends at or below PostgreSQL's with every
        # ack behind an fsync (both fsync behind a socket); SQLite syncs in
        # the caller's process, and the default mode does not fsync at all.
        table.context = not (sync_always and peer == POSTGRES)
        table.ratio(
            f"append p50 at or below {peer} (ratio <= 1)",
            table.get(CACHED, OURS),
            table.get(CACHED, peer),
            "p50",
            1.0,
        )
        # The peers store one row per event whatever the commit size, so
        # their load of 100 events is measured once (in the 1/commit rounds).
        # Restated: judged at ten events per commit; one-event commits
        # without the cache stay as context.
        theirs = table.get("load 100 events (1/commit)", peer)
        for per_commit in (10, 1):
            table.context = per_commit == 1
            table.ratio(
                f"load 100 ({per_commit}/commit) p50 at or below {peer} (ratio <= 1)",
                table.get(f"load 100 events ({per_commit}/commit)", OURS),
                theirs,
                "p50",
                1.0,
            )
    table.context = False


def _memory(table: _Table, memory: dict[str, dict[str, float]]) -> None:
    for key, got in memory.items():
        if key.startswith("iter"):
            table.below(f"{key}: peak RSS growth < 50 MB", got["peak_growth_mb"], 50.0, "MB")


def _cache_memory(table: _Table, cache_memory: dict[str, dict[str, float]]) -> None:
    for key, got in cache_memory.items():
        bound = got["max_bytes"] / 2**20
        if got["evictions"]:
            table.below(
                f"{key} ({got['aggregates']:.0f}): RSS growth <= the {bound:g} MiB bound",
                got["rss_growth_mb"],
                bound,
                "MiB",
                at_most=True,
            )
        table.context = True
        table.below(f"{key}: RSS per cached event", got["rss_per_event"], 0.0, "B")
        table.below(f"{key}: the cache's estimate per event", got["estimate_per_event"], 0.0, "B")
        table.context = False
