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
    iter_events: int
    writers: int
    writer_appends: int
    writer_rounds: int


PRESETS = {
    "full": Sizes(
        samples=2000,
        rounds=20,
        warmup=50,
        load_sizes=(10, 100, 1000, 10_000),
        load_samples={10: 500, 100: 400, 1000: 160, 10_000: 10},
        iter_events=100_000,
        writers=64,
        writer_appends=40,
        writer_rounds=5,
    ),
    "quick": Sizes(
        samples=400,
        rounds=8,
        warmup=20,
        load_sizes=(10, 100, 1000),
        load_samples={10: 100, 100: 60, 1000: 12},
        iter_events=20_000,
        writers=64,
        writer_appends=15,
        writer_rounds=3,
    ),
    "tiny": Sizes(
        samples=20,
        rounds=2,
        warmup=2,
        load_sizes=(10, 100),
        load_samples={10: 4, 100: 4},
        iter_events=1000,
        writers=64,
        writer_appends=2,
        writer_rounds=1,
    ),
}
