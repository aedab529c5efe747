"""Benchmarks for angzarr_es: `python -m benchmarks [--quick] [--sync-always] [--pg-dsn DSN]`.

Every operation is measured side by side with its baselines in one run (raw
nats-py, naive nats-py, the `eventsourcing` library's recorders, a codec-only
in-memory store) and reported as p50/p90/p99 and a ratio. A full run on the
server it starts writes the published results to `docs/benchmarks/`; `--quick`,
`--tiny` and `--url` runs write to `angzarr-es-bench` in the temporary
directory (`--out` chooses).

`run` parses the arguments and calls the cases, one module each: `appends`
(and conflicts), `loads`, `hot` (loads through the hot-aggregate cache),
`writers` (concurrent writers) and `memory` (streaming, in a `memchild`
process; the cache's memory, in a `cachechild` process); `cluster` starts a
three-server cluster for `--cluster` and runs the appends and loads on it.
They share `context` (the server and the connections of a run), `sizes`
(the presets), `contenders` (the rows' names), `harness` (timing) and the
baselines `raw`, `wire` and `peers`; `targets` judges the results and
`report` writes them.
"""
