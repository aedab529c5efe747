"""Prometheus metrics for the store and the bus (the `metrics` extra: prometheus-client).

    metrics = angzarr_es.metrics.instrument(client)      # sets client.observer
    angzarr_es.metrics.serve(9464)                       # or expose REGISTRY your own way

Series (label values in braces):

    angzarr_es_append_seconds{domain,outcome}       histogram: ok | conflict | error
    angzarr_es_load_seconds{domain}                 histogram
    angzarr_es_appended_events_total{domain}        events written
    angzarr_es_append_conflicts_total{domain}       ConcurrencyError raised
    angzarr_es_append_retries_total{domain,reason}  timeout | in_process | lost_race
    angzarr_es_bus_redeliveries_total{consumer}     for the bus: `metrics.redelivered(...)`
    angzarr_es_bus_dead_letters_total{consumer}     for the bus: `metrics.dead_lettered(...)`

`StoreMetrics` is an `angzarr_es.Observer`: `connect(observer=StoreMetrics())`
does the same as `instrument()`. Instrumented clients also stamp every commit
with a W3C `traceparent` header (see `angzarr_es.tracing`). Without an
observer nothing here runs: the store's hot path checks one attribute.
"""

from __future__ import annotations

import threading
import weakref

from angzarr_es import tracing
from angzarr_es._observe import Observer, Outcome
from angzarr_es.client import Client

try:
    import prometheus_client as prom
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "angzarr_es.metrics needs prometheus-client: pip install 'angzarr-es[metrics]'"
    ) from exc

__all__ = ["LATENCY_BUCKETS", "StoreMetrics", "instrument", "serve"]

# Seconds: sub-millisecond resolution where the store lives, up to a failover.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


class _Families:
    """The metric families of one registry (a registry accepts each name once)."""

    def __init__(self, registry: prom.CollectorRegistry) -> None:
        self.append_seconds = prom.Histogram(
            "angzarr_es_append_seconds",
            "Time to append one commit, by outcome.",
            ["domain", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.load_seconds = prom.Histogram(
            "angzarr_es_load_seconds",
            "Time to load an aggregate's history.",
            ["domain"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.appended_events = prom.Counter(
            "angzarr_es_appended_events", "Events written.", ["domain"], registry=registry
        )
        self.conflicts = prom.Counter(
            "angzarr_es_append_conflicts",
            "Appends rejected with ConcurrencyError.",
            ["domain"],
            registry=registry,
        )
        self.retries = prom.Counter(
            "angzarr_es_append_retries",
            "Extra publish attempts inside one append.",
            ["domain", "reason"],
            registry=registry,
        )
        self.redeliveries = prom.Counter(
            "angzarr_es_bus_redeliveries",
            "Messages delivered again to a projector.",
            ["consumer"],
            registry=registry,
        )
        self.dead_letters = prom.Counter(
            "angzarr_es_bus_dead_letters",
            "Messages moved to the dead-letter stream.",
            ["consumer"],
            registry=registry,
        )


_families: weakref.WeakKeyDictionary[prom.CollectorRegistry, _Families] = (
    weakref.WeakKeyDictionary()
)
_families_lock = threading.Lock()


def _families_of(registry: prom.CollectorRegistry) -> _Families:
    with _families_lock:
        families = _families.get(registry)
        if families is None:
            families = _families[registry] = _Families(registry)
        return families


class StoreMetrics(Observer):
    """An observer counting into the metric families of `registry`.

    The families are registered once per registry and shared: any number of
    `StoreMetrics` (and instrumented clients) may use the same registry.
    """

    def __init__(self, registry: prom.CollectorRegistry | None = None, *, trace: bool = True):
        registry = prom.REGISTRY if registry is None else registry
        self.registry = registry
        self.trace = trace
        families = _families_of(registry)
        self.append_seconds = families.append_seconds
        self.load_seconds = families.load_seconds
        self.appended_events = families.appended_events
        self.conflicts = families.conflicts
        self.retries = families.retries
        self.redeliveries = families.redeliveries
        self.dead_letters = families.dead_letters

    # -- Observer ----------------------------------------------------------------

    def commit_headers(self, headers: dict[str, str]) -> None:
        if self.trace:
            tracing.inject(headers)

    def appended(self, domain: str, outcome: Outcome, seconds: float, events: int) -> None:
        self.append_seconds.labels(domain, outcome).observe(seconds)
        if outcome == "conflict":
            self.conflicts.labels(domain).inc()
        if events:
            self.appended_events.labels(domain).inc(events)

    def loaded(self, domain: str, seconds: float) -> None:
        self.load_seconds.labels(domain).observe(seconds)

    def retried(self, domain: str, reason: str) -> None:
        self.retries.labels(domain, reason).inc()

    def redelivered(self, consumer: str, count: int = 1) -> None:
        """Count redeliveries to `consumer` (for consumers you run yourself)."""
        self.redeliveries.labels(consumer).inc(count)

    def dead_lettered(self, consumer: str) -> None:
        """Count one message of `consumer` moved to the dead-letter stream."""
        self.dead_letters.labels(consumer).inc()


def instrument(
    client: Client, metrics: StoreMetrics | None = None, *, trace: bool = True
) -> StoreMetrics:
    """Measure `client`'s stores, and its projectors made from now on; returns the metrics.

    Sets `client.observer` (replacing any observer set before). With
    `trace`, commits carry a `traceparent` header. Without `metrics`, the
    series go to the default registry (`prometheus_client.REGISTRY`);
    instrumenting several clients, with or without `metrics`, shares the
    series of each registry (the families register once per registry).
    """
    metrics = StoreMetrics(trace=trace) if metrics is None else metrics
    client.observer = metrics
    return metrics


def serve(port: int, addr: str = "0.0.0.0", registry: prom.CollectorRegistry | None = None) -> None:
    """Serve `/metrics` over HTTP from a background thread."""
    prom.start_http_server(
        port, addr=addr, registry=prom.REGISTRY if registry is None else registry
    )
