"""The contenders' names: the keys of every result row and of the targets."""

from __future__ import annotations

OURS = "angzarr_es"
OURS_CONSUMER = "angzarr_es (consumer)"
OURS_ONE = "angzarr_es, 1 event per call"
OURS_HOT = "angzarr_es (hot cache)"
OURS_PER_DOMAIN = "angzarr_es (per-domain)"
"""angzarr_es in the per-domain stream layout (angzarr's bus), beside `OURS` in the
single layout (benchmarks.layouts)."""
FLOOR = "raw nats-py (floor)"
FLOOR_DECODED = "raw nats-py (floor + event decode)"
NAIVE = "naive nats-py"
CODEC = "codec only (in memory)"
WIRE = "socket only (no client)"
SQLITE = "eventsourcing-sqlite"
POSTGRES = "eventsourcing-postgres"
PEERS = (SQLITE, POSTGRES)
ES_MODULE = "angzarr_es.eventsourcing"
"""This project's persistence module for the eventsourcing library (benchmarks.es_app)."""

# eventsourcing's Application repository with its aggregate cache and fast-forward.
CACHED = " (cached repository)"
CACHED_PEERS = (SQLITE + CACHED, POSTGRES + CACHED)
