"""Prometheus metrics and W3C trace context on commits."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import prometheus_client as prom
import pytest

import angzarr_es
from angzarr_es import filters, metrics, tracing
from angzarr_es.config import Config
from angzarr_es.pb import player_pb2
from angzarr_es.tracing import TraceContext
from tests.support import jsadmin
from tests.support.bus import stored_headers

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
    ],
)
def test_invalid_traceparent_is_ignored(header: str) -> None:
    assert TraceContext.parse(header) is None


def test_traceparent_round_trip_and_children() -> None:
    ctx = TraceContext.parse(VALID)
    assert ctx == TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", True)
    assert ctx.traceparent == VALID
    # A later version may add fields; version 00 readers keep the first four.
    assert TraceContext.parse(VALID.replace("00-", "01-", 1) + "-more") is not None
    child = ctx.child()
    assert child.trace_id == ctx.trace_id
    assert child.span_id != ctx.span_id
    unsampled = TraceContext.parse(VALID[:-2] + "00")
    assert unsampled is not None
    assert not unsampled.sampled


def test_inject_continues_the_current_trace_or_starts_one() -> None:
    assert tracing.current() is None
    headers: dict[str, str] = {}
    fresh = tracing.inject(headers)
    assert TraceContext.parse(headers["traceparent"]) == fresh
    with tracing.continue_from({"traceparent": VALID, "tracestate": "k=v"}) as handling:
        assert handling.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
        with tracing.span() as inner:
            sent = tracing.inject(headers)
        assert inner.trace_id == sent.trace_id == handling.trace_id
        assert sent.span_id not in (inner.span_id, handling.span_id)
        assert headers["tracestate"] == "k=v"
    assert tracing.current() is None


@pytest.fixture
def instrumented(client: angzarr_es.Client) -> tuple[angzarr_es.Client, metrics.StoreMetrics]:
    return client, metrics.instrument(client, metrics.StoreMetrics(prom.CollectorRegistry()))


def value(m: metrics.StoreMetrics, name: str, **labels: str) -> float:
    got = m.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


async def test_appends_loads_and_conflicts_are_counted(
    instrumented: tuple[angzarr_es.Client, metrics.StoreMetrics],
) -> None:
    client, m = instrumented
    store = client.store("player")
    assert type(store) is angzarr_es.EventStore
    assert client.observer is m
    pid = uuid.uuid4()
    await store.append(pid, [player_pb2.PlayerRegistered(name="a")], expected=0)
    await store.append(pid, [player_pb2.FundsDeposited(), player_pb2.FundsDeposited()], expected=1)
    with pytest.raises(angzarr_es.ConcurrencyError):
        await store.append(pid, [player_pb2.FundsDeposited()], expected=1)
    await store.load(pid)

    ok = {"domain": "player", "outcome": "ok"}
    assert value(m, "angzarr_es_append_seconds_count", **ok) == 2
    assert value(m, "angzarr_es_append_seconds_sum", **ok) > 0
    conflict = {"domain": "player", "outcome": "conflict"}
    assert value(m, "angzarr_es_append_seconds_count", **conflict) == 1
    assert value(m, "angzarr_es_append_conflicts_total", domain="player") == 1
    assert value(m, "angzarr_es_appended_events_total", domain="player") == 3
    assert value(m, "angzarr_es_load_seconds_count", domain="player") == 1
    # The appends made the new aggregate a cached one: the load was a hit.
    assert value(m, "angzarr_es_cache_loads_total", domain="player", outcome="hit") == 1
    client.clear_cache()
    await store.load(pid)
    assert value(m, "angzarr_es_cache_loads_total", domain="player", outcome="miss") == 1


async def test_a_lost_race_with_any_is_a_retry(
    instrumented: tuple[angzarr_es.Client, metrics.StoreMetrics], config: Config
) -> None:
    client, m = instrumented
    store = client.store("player")
    await store.append("p", [player_pb2.PlayerRegistered()], expected=0)  # cached: next 1
    async with await angzarr_es.connect(config=config) as other:
        await other.store("player").append("p", [player_pb2.FundsDeposited()], expected=1)
    result = await store.append("p", [player_pb2.FundsDeposited()], expected=angzarr_es.ANY)
    assert result.first_sequence == 2
    assert value(m, "angzarr_es_append_retries_total", domain="player", reason="lost_race") == 1


async def test_commits_carry_the_current_trace(
    instrumented: tuple[angzarr_es.Client, metrics.StoreMetrics],
) -> None:
    client, _ = instrumented
    store = client.store("player")
    with tracing.continue_from({"traceparent": VALID}):
        await store.append("traced", [player_pb2.PlayerRegistered()], expected=0)
    stored = await stored_headers(client, "player", "traced")
    sent = TraceContext.parse(stored["traceparent"])
    assert sent is not None
    assert sent.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert sent.span_id != "00f067aa0ba902b7"


@pytest.mark.parametrize("registry", ["default", "own"])
async def test_instrumenting_two_clients_shares_the_series(config: Config, registry: str) -> None:
    reg = prom.REGISTRY if registry == "default" else prom.CollectorRegistry()

    def instrument(client: angzarr_es.Client, *, trace: bool) -> metrics.StoreMetrics:
        if registry == "default":
            return metrics.instrument(client, trace=trace)
        return metrics.instrument(client, metrics.StoreMetrics(reg, trace=trace))

    async with (
        await angzarr_es.connect(config=config) as one,
        await angzarr_es.connect(config=config) as two,
    ):
        await one.provision()
        try:
            m1 = instrument(one, trace=True)
            m2 = instrument(two, trace=False)  # used to raise: duplicated timeseries
            assert m1.registry is m2.registry is reg
            assert m1.trace
            assert not m2.trace
            domain = f"d{uuid.uuid4().hex}"  # the default registry outlives this test
            await one.store(domain).append("a", [player_pb2.PlayerRegistered()], expected=0)
            await two.store(domain).append("b", [player_pb2.PlayerRegistered()], expected=0)
            assert value(m1, "angzarr_es_appended_events_total", domain=domain) == 2
            assert value(m2, "angzarr_es_append_seconds_count", domain=domain, outcome="ok") == 2
        finally:
            await jsadmin.delete_stream(one, config.nats.stream_name)
            await jsadmin.delete_stream(one, config.nats.snapshot_stream)


def test_bus_counters() -> None:
    m = metrics.StoreMetrics(prom.CollectorRegistry())
    m.redelivered("player-projector", 2)
    m.dead_lettered("player-projector")
    assert value(m, "angzarr_es_bus_redeliveries_total", consumer="player-projector") == 2
    assert value(m, "angzarr_es_bus_dead_letters_total", consumer="player-projector") == 1


async def test_projector_redeliveries_and_dead_letters_are_counted(
    instrumented: tuple[angzarr_es.Client, metrics.StoreMetrics],
) -> None:
    client, m = instrumented
    await client.store("player").append("bad", [player_pb2.FundsDeposited()], expected=0)
    done = asyncio.Event()

    async def poisoned(d: angzarr_es.Delivery) -> None:
        if d.delivery_count == 2:
            done.set()
        raise ValueError("cannot project")

    async with client.projector(
        "counted", filters.domain("player"), poisoned, max_deliver=2, backoff=(0.01,)
    ) as p:
        await p.wait(lambda s: s.dead_lettered == 1, timeout=20)
    assert done.is_set()
    assert value(m, "angzarr_es_bus_redeliveries_total", consumer="counted") == 1
    assert value(m, "angzarr_es_bus_dead_letters_total", consumer="counted") == 1


async def test_a_trace_follows_an_event_from_append_to_projector(
    instrumented: tuple[angzarr_es.Client, metrics.StoreMetrics],
) -> None:
    client, _ = instrumented
    parent = TraceContext.parse(VALID)
    assert parent is not None
    with tracing.use(parent):
        await client.store("player").append("traced", [player_pb2.FundsDeposited()], expected=0)
    seen: list[TraceContext | None] = []
    got = asyncio.Event()

    async def handler(d: angzarr_es.Delivery) -> None:
        seen.append(tracing.current())
        got.set()

    async with client.projector("traced", filters.domain("player"), handler):
        await asyncio.wait_for(got.wait(), 20)
    context = seen[0]
    assert context is not None
    # Same trace id as the caller of append (without OpenTelemetry, in a span
    # of its own: tests/integration/test_trace_modes.py).
    assert context.traceparent.split("-")[1] == VALID.split("-")[1]


async def test_a_subscription_delivery_carries_the_commit_headers(
    instrumented: tuple[angzarr_es.Client, metrics.StoreMetrics],
) -> None:
    """Catch-up subscriptions do not open a span themselves: the delivery
    carries the commit's headers, so a handler can continue the trace."""
    client, _ = instrumented
    parent = TraceContext.parse(VALID)
    assert parent is not None
    with tracing.use(parent):
        await client.store("player").append("sub-traced", [player_pb2.FundsDeposited()], expected=0)
    async with client.subscribe(filters.aggregate("player", "sub-traced")) as sub:
        delivery = await asyncio.wait_for(anext(sub), 20)
    with tracing.continue_from(delivery.headers) as context:
        assert context.traceparent.split("-")[1] == VALID.split("-")[1]
    assert "Nats-Msg-Id" in delivery.headers


ROOT = Path(__file__).resolve().parents[2]

# The series as dashboards know them: (sample name, label names), and the
# histograms' bucket bounds. Changing the spec table must not change these.
SERIES = {
    ("angzarr_es_append_seconds_bucket", ("domain", "le", "outcome")),
    ("angzarr_es_append_seconds_count", ("domain", "outcome")),
    ("angzarr_es_append_seconds_sum", ("domain", "outcome")),
    ("angzarr_es_load_seconds_bucket", ("domain", "le")),
    ("angzarr_es_load_seconds_count", ("domain",)),
    ("angzarr_es_load_seconds_sum", ("domain",)),
    ("angzarr_es_appended_events_total", ("domain",)),
    ("angzarr_es_append_conflicts_total", ("domain",)),
    ("angzarr_es_append_retries_total", ("domain", "reason")),
    ("angzarr_es_cache_loads_total", ("domain", "outcome")),
    ("angzarr_es_bus_redeliveries_total", ("consumer",)),
    ("angzarr_es_bus_dead_letters_total", ("consumer",)),
}
BOUNDS = "0.0001 0.00025 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1.0 2.5 5.0 +Inf"


def test_the_exported_series_are_unchanged() -> None:
    reg = prom.CollectorRegistry()
    m = metrics.StoreMetrics(reg)
    m.appended("d", "ok", 0.001, 2)
    m.appended("d", "conflict", 0.001, 0)
    m.loaded("d", 0.001)
    m.retried("d", "timeout")
    m.cache_load("d", "hit")
    m.redelivered("c")
    m.dead_lettered("c")
    samples = [s for family in reg.collect() for s in family.samples]
    got = {(s.name, tuple(sorted(s.labels))) for s in samples if not s.name.endswith("_created")}
    assert got == SERIES
    for name in ("angzarr_es_append_seconds_bucket", "angzarr_es_load_seconds_bucket"):
        bounds = [s.labels["le"] for s in samples if s.name == name and s.labels["domain"] == "d"]
        assert " ".join(dict.fromkeys(bounds)) == BOUNDS
    kinds = {f.name: f.type for f in reg.collect()}
    assert kinds == {m.name.removesuffix("_total"): m.kind for m in metrics.SPEC.values()}


def test_the_docs_and_the_docstring_list_every_series_of_the_spec() -> None:
    docs = (ROOT / "docs" / "cli.md").read_text()
    rows = re.findall(r"^\| `(angzarr_es_\w+)` \| ([^|]+) \| ([^|]+) \|$", docs, re.MULTILINE)
    table = {name: (kind, re.findall(r"`(\w+)`", labels)) for name, kind, labels in rows}
    spec = {m.name for m in metrics.SPEC.values()}
    assert not spec - set(table), f"rows missing from docs/cli.md: {sorted(spec - set(table))}"
    assert not set(table) - spec, f"rows of docs/cli.md not in SPEC: {sorted(set(table) - spec)}"
    for m in metrics.SPEC.values():
        kind, labels = table[m.name]
        assert kind.startswith(m.kind), m.name
        assert tuple(labels) == m.labels, m.name
        assert f"{m.name}{{{','.join(m.labels)}}}" in (metrics.__doc__ or "")


def test_store_metrics_exposes_every_family_of_the_spec() -> None:
    m = metrics.StoreMetrics(prom.CollectorRegistry())
    assert set(m.families) == set(metrics.SPEC)
    for key, family in m.families.items():
        assert getattr(m, key) is family  # the attributes of before `families`
    with pytest.raises(AttributeError):
        _ = m.no_such_family  # type: ignore[attr-defined]


class Recorder(angzarr_es.Observer):
    """Overrides two hooks; the others keep the base class's no-ops."""

    def __init__(self) -> None:
        self.appends: list[tuple[str, str, int]] = []
        self.loads: list[str] = []

    def appended(self, domain: str, outcome: str, seconds: float, events: int) -> None:
        assert seconds > 0
        self.appends.append((domain, outcome, events))

    def loaded(self, domain: str, seconds: float) -> None:
        self.loads.append(domain)


def test_the_base_observer_does_nothing() -> None:
    o = angzarr_es.Observer()
    headers: dict[str, str] = {}
    o.commit_headers(headers)
    o.appended("d", "ok", 0.1, 1)
    o.loaded("d", 0.1)
    o.retried("d", "timeout")
    o.cache_load("d", "fallback")
    o.redelivered("c", 2)
    o.dead_lettered("c")
    assert headers == {}


async def test_an_observer_given_to_connect_hears_appends_and_loads(config: Config) -> None:
    recorder = Recorder()
    async with await angzarr_es.connect(config=config, observer=recorder) as client:
        await client.provision()
        try:
            assert client.observer is recorder
            store = client.store("player")
            await store.append("a", [player_pb2.PlayerRegistered()] * 2, expected=0)
            await store.append("a", [player_pb2.FundsDeposited()], expected=2, idempotency_key="k")
            await store.append("a", [player_pb2.FundsDeposited()], expected=2, idempotency_key="k")
            with pytest.raises(angzarr_es.ConcurrencyError):
                await store.append("a", [player_pb2.FundsDeposited()], expected=0)
            with pytest.raises(TypeError):  # refused before anything is sent: not reported
                await store.append("a", player_pb2.FundsDeposited(), expected=3)  # type: ignore[arg-type]
            assert (await store.load("a")).next_sequence == 3
            assert recorder.appends == [
                ("player", "ok", 2),
                ("player", "ok", 1),
                ("player", "ok", 0),  # the duplicate wrote nothing
                ("player", "conflict", 0),
            ]
            assert recorder.loads == ["player"]
            client.observer = None  # the stores made before stop reporting too
            await store.load("a")
            assert recorder.loads == ["player"]
        finally:
            await jsadmin.delete_stream(client, config.nats.stream_name)
            await jsadmin.delete_stream(client, config.nats.snapshot_stream)
