"""Prometheus metrics for the store and the bus (the `metrics` extra: prometheus-client).

    metrics = angzarr_es.metrics.instrument(client)      # sets client.observer
    angzarr_es.metrics.serve(9464)                       # or expose REGISTRY your own way

`StoreMetrics` is an `angzarr_es.Observer`: `connect(observer=StoreMetrics())`
does the same as `instrument()`. Instrumented clients also stamp every commit
with a W3C `traceparent` header (see `angzarr_es.tracing`; with OpenTelemetry
installed, only a commit its propagator gave none). Without an
observer nothing here runs: the store's hot path checks one attribute.

Every series is one row of `SPEC`; this list is generated from it:

"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import msgspec

from angzarr_es import tracing
from angzarr_es._observe import CacheOutcome, Observer, Outcome
from angzarr_es.client import Client

try:
    import prometheus_client as prom
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "angzarr_es.metrics needs prometheus-client: pip install 'angzarr-es[metrics]'"
    ) from exc

__all__ = ["LATENCY_BUCKETS", "SPEC", "Metric", "StoreMetrics", "instrument", "serve"]

# Seconds: sub-millisecond resolution where the store lives, up to a failover.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


class Metric(msgspec.Struct, frozen=True, kw_only=True):
    """One metric family, as it is exported."""

    name: str
    """The series name; a counter's ends in `_total`."""
    kind: Literal["counter", "histogram"]
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    """A histogram's upper bounds (+Inf is added)."""
    values: str = ""
    """The label values, where they are a fixed set (for the docs)."""


# The spec table: key -> metric. The key names the family on StoreMetrics
# (`metrics.families[key]`); the families, this module's series list and the
# check of the docs table (tests/integration/test_metrics.py) all come from here.
SPEC: Mapping[str, Metric] = {
    "append_seconds": Metric(
        name="angzarr_es_append_seconds",
        kind="histogram",
        help="Time to append one commit, by outcome.",
        labels=("domain", "outcome"),
        buckets=LATENCY_BUCKETS,
        values="outcome: ok | conflict | error",
    ),
    "load_seconds": Metric(
        name="angzarr_es_load_seconds",
        kind="histogram",
        help="Time to load an aggregate's history.",
        labels=("domain",),
        buckets=LATENCY_BUCKETS,
    ),
    "appended_events": Metric(
        name="angzarr_es_appended_events_total",
        kind="counter",
        help="Events written.",
        labels=("domain",),
    ),
    "conflicts": Metric(
        name="angzarr_es_append_conflicts_total",
        kind="counter",
        help="Appends rejected with ConcurrencyError.",
        labels=("domain",),
    ),
    "retries": Metric(
        name="angzarr_es_append_retries_total",
        kind="counter",
        help="Extra publish attempts inside one append.",
        labels=("domain", "reason"),
        values="reason: timeout | in_process | lost_race",
    ),
    "cache_loads": Metric(
        name="angzarr_es_cache_loads_total",
        kind="counter",
        help="Loads and iterations with the hot-aggregate cache on, by what they found.",
        labels=("domain", "outcome"),
        values="outcome: hit | miss | fallback",
    ),
    "redeliveries": Metric(
        name="angzarr_es_bus_redeliveries_total",
        kind="counter",
        help="Messages delivered again to a projector.",
        labels=("consumer",),
    ),
    "dead_letters": Metric(
        name="angzarr_es_bus_dead_letters_total",
        kind="counter",
        help="Messages moved to the dead-letter stream.",
        labels=("consumer",),
    ),
}


def _series_list() -> str:
    lines = []
    for m in SPEC.values():
        lines.append(f"    {m.name}{{{','.join(m.labels)}}}  {m.kind}")
        lines.append(f"        {m.help} {m.values}".rstrip())
    return "\n".join(lines) + "\n"


__doc__ = (__doc__ or "") + _series_list()


class _Families:
    """The families of one registry, built from SPEC (a registry takes each name once)."""

    def __init__(self, registry: prom.CollectorRegistry) -> None:
        self.counters: dict[str, prom.Counter] = {}
        self.histograms: dict[str, prom.Histogram] = {}
        for key, m in SPEC.items():
            if m.kind == "histogram":
                self.histograms[key] = prom.Histogram(
                    m.name, m.help, m.labels, buckets=m.buckets, registry=registry
                )
            else:
                self.counters[key] = prom.Counter(m.name, m.help, m.labels, registry=registry)


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
    """An observer counting into the metric families of `registry` (see `SPEC`).

    The families are registered once per registry and shared: any number of
    `StoreMetrics` (and instrumented clients) may use the same registry.
    `families[key]` is the family of `SPEC[key]` (also readable as the
    attribute `key`, e.g. `.append_seconds`, as before `families` existed).
    """

    def __init__(self, registry: prom.CollectorRegistry | None = None, *, trace: bool = True):
        self.registry = prom.REGISTRY if registry is None else registry
        self.trace = trace
        families = _families_of(self.registry)
        self._counters = families.counters
        self._histograms = families.histograms
        self.families: Mapping[str, prom.Counter | prom.Histogram] = {
            **families.counters,
            **families.histograms,
        }

    if not TYPE_CHECKING:  # the old attributes, for code written before `families`

        def __getattr__(self, key: str) -> prom.Counter | prom.Histogram:
            if key != "families" and key in self.families:
                return self.families[key]
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    # -- Observer ----------------------------------------------------------------

    def commit_headers(self, headers: dict[str, str]) -> None:
        if self.trace and tracing.HEADER not in headers:  # OpenTelemetry wrote none
            tracing.inject(headers)

    def appended(self, domain: str, outcome: Outcome, seconds: float, events: int) -> None:
        self._histograms["append_seconds"].labels(domain, outcome).observe(seconds)
        if outcome == "conflict":
            self._counters["conflicts"].labels(domain).inc()
        if events:
            self._counters["appended_events"].labels(domain).inc(events)

    def loaded(self, domain: str, seconds: float) -> None:
        self._histograms["load_seconds"].labels(domain).observe(seconds)

    def retried(self, domain: str, reason: str) -> None:
        self._counters["retries"].labels(domain, reason).inc()

    def cache_load(self, domain: str, outcome: CacheOutcome) -> None:
        self._counters["cache_loads"].labels(domain, outcome).inc()

    def redelivered(self, consumer: str, count: int = 1) -> None:
        """Count redeliveries to `consumer` (for consumers you run yourself)."""
        self._counters["redeliveries"].labels(consumer).inc(count)

    def dead_lettered(self, consumer: str) -> None:
        """Count one message of `consumer` moved to the dead-letter stream."""
        self._counters["dead_letters"].labels(consumer).inc()


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
