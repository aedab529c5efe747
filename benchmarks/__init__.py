"""Benchmarks for angzarr_es: `python -m benchmarks [--quick] [--sync-always] [--pg-dsn DSN]`.

Every operation is measured side by side with its baselines in one run (raw
nats-py, naive nats-py, the `eventsourcing` library's recorders, a codec-only
in-memory store) and reported as p50/p90/p99 and a ratio. Results go to
`docs/benchmarks/`.
"""
