"""How much each preset measures: `--quick`, `--tiny` or the full run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sizes:
    samples: int
    rounds: int
    warmup: int
    load_sizes: tuple[int, ...]
    load_samples: dict[int, int]
    hot_sizes: tuple[int, ...]
    # The cache's memory: aggregates of ten one-event commits read into a cache
    # that holds them all (bytes per event), and aggregates of one commit read
    # into a cache of `bound_bytes` that cannot (the bound under many aggregates).
    per_event_aggregates: int
    bound_aggregates: int
    bound_bytes: int
    iter_events: int
    writers: int
    writer_appends: int
    writer_rounds: int
    # On a cluster: new per-domain streams whose leaders are counted per server.
    spread_domains: int


PRESETS = {
    "full": Sizes(
        samples=2000,
        rounds=20,
        warmup=50,
        load_sizes=(10, 100, 1000, 10_000),
        load_samples={10: 500, 100: 400, 1000: 160, 10_000: 10},
        hot_sizes=(10, 100, 1000),
        per_event_aggregates=2000,
        bound_aggregates=100_000,
        bound_bytes=16 * 2**20,
        iter_events=100_000,
        writers=64,
        writer_appends=40,
        writer_rounds=5,
        spread_domains=12,
    ),
    "quick": Sizes(
        samples=400,
        rounds=8,
        warmup=20,
        load_sizes=(10, 100, 1000),
        load_samples={10: 100, 100: 60, 1000: 12},
        hot_sizes=(100, 1000),
        per_event_aggregates=500,
        bound_aggregates=20_000,
        bound_bytes=8 * 2**20,
        iter_events=20_000,
        writers=64,
        writer_appends=15,
        writer_rounds=3,
        spread_domains=12,
    ),
    "tiny": Sizes(
        samples=20,
        rounds=2,
        warmup=2,
        load_sizes=(10, 100),
        load_samples={10: 4, 100: 4},
        hot_sizes=(100,),
        per_event_aggregates=50,
        bound_aggregates=1000,
        bound_bytes=2**20,
        iter_events=1000,
        writers=64,
        writer_appends=2,
        writer_rounds=1,
        spread_domains=3,
    ),
}
