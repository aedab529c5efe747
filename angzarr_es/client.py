"""Connecting, provisioning, and handing out stores."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import msgspec

from angzarr_es import _provision
from angzarr_es._codec import RecordedEvent
from angzarr_es._health import check as check_health
from angzarr_es._lifecycle import ClosesOnExit
from angzarr_es._nats import Wire
from angzarr_es._nats import messages as m
from angzarr_es._nats.wire import TapPoint
from angzarr_es._observe import Observer
from angzarr_es._provision import ProvisionPlan
from angzarr_es._stream_configs import store_differences, store_stream_config
from angzarr_es._types import Clock, check_clock, utc_now
from angzarr_es.bus import (
    Bus,
    CatchUp,
    Delivery,
    Handler,
    Projector,
    ProjectorSettings,
    SkipHandler,
    Start,
)
from angzarr_es.bus._factory import ProjectorFactory
from angzarr_es.bus._owned import Owned, close_after
from angzarr_es.bus._span import make_catch_up, make_projector
from angzarr_es.config import Config, NatsConfig
from angzarr_es.errors import (
    ConfigError,
    InvalidEdition,
)
from angzarr_es.filters import FilterLike
from angzarr_es.health import DEFAULT_LAG_THRESHOLD, CacheStats, Health
from angzarr_es.store import (
    EventStore,
    StoreContext,
    _correlation,
    _discovery,
    _editions,
)
from angzarr_es.store._cache import PositionCache
from angzarr_es.store._context import check_stream, provisioned
from angzarr_es.store._hot import HotCache
from angzarr_es.subjects import (
    Subjects,
    correlation_token,
    validate_edition,
)

__all__ = ["Client", "connect"]

log = logging.getLogger("angzarr_es")


async def connect(
    url: str | list[str] | None = None,
    *,
    config: Config | None = None,
    observer: Observer | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> Client:
    """Connect to NATS.

    The server is `url` if given, else the one in `config`, else `NATS_URL`,
    else nats://localhost:4222. With no `config`, `Config.load()` reads the
    environment. `observer` becomes `Client.observer`. `clock` gives the
    `created_at` of appends and snapshots (default `datetime.now(UTC)`; called
    once here to check it).

    Raises:
        TypeError: `url` is not a string or a list of strings, `config` not a
            `Config`, or `clock` not a function returning an aware datetime.
        ConfigError: invalid configuration.
        StoreUnavailable: no server could be reached.
        PermissionDenied: the server refused the credentials.
    """
    if isinstance(url, Config):
        raise TypeError("connect() takes a Config as a keyword: connect(config=...)")
    if url is not None and not (
        isinstance(url, str) or (isinstance(url, list) and all(isinstance(u, str) for u in url))
    ):
        raise TypeError(
            "connect() takes a server URL or a list of them, such as "
            f"'nats://localhost:4222', not {type(url).__name__} {url!r}"
        )
    if config is not None and not isinstance(config, Config):
        raise TypeError(f"connect(config=...) takes a Config, not {type(config).__name__}")
    where = "<config>"
    if config is None:
        env: dict[str, str] = dict(os.environ)
        if url is not None:
            env.pop("NATS_URL", None)  # replaced by `url`: its faults are not ours
        config = Config.load(None, env)
    if url is not None:
        config = config.with_url(url)
        where = "connect(url=...)"
    now = check_clock(clock)
    config.validate(where)
    wire = await Wire.connect(config.nats)
    return Client(wire, config, observer=observer, clock=now)


class Client(ClosesOnExit, ProjectorFactory[Projector]):
    """A connection to NATS: provisions the stream and hands out stores,
    projectors (`projector(name, [filter,] handler, ...)`) and subscriptions."""

    def __init__(
        self,
        wire: Wire,
        config: Config,
        *,
        observer: Observer | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._wire = wire
        self._config = config
        self._ctx = StoreContext(
            wire=wire,
            cfg=config.nats,
            cache=PositionCache(config.nats.cache_size),
            observer=observer,
            hot=HotCache(config.nats.cache_bytes),
            clock=clock,
        )
        self._subjects = Subjects(config.nats.subject_prefix)
        self._bus: Bus | None = None
        self._owned = Owned()  # what close() stops first

    @property
    def config(self) -> Config:
        """The configuration this client was made with."""
        return self._config

    @property
    def observer(self) -> Observer | None:
        """What the stores and projectors of this client report to (None: nothing).

        Setting it takes effect at once for every store of this client, made
        before or after, and for the projectors made afterwards.
        `angzarr_es.metrics.instrument(client)` sets a `StoreMetrics`.
        """
        return self._ctx.observer

    @observer.setter
    def observer(self, observer: Observer | None) -> None:
        self._ctx.observer = observer

    @property
    def server_version(self) -> str:
        """The connected server's version, e.g. "2.15.1"."""
        return ".".join(map(str, self._wire.server_version))

    @property
    def connected_url(self) -> str:
        """The URL of the server currently connected to, credentials redacted ("" if none)."""
        return self._wire.connected_url

    @property
    def closed(self) -> bool:
        """Whether the connection was closed for good (`close()`, or the server gone for good)."""
        return self._wire.closed

    @property
    def connected(self) -> bool:
        """Whether the connection is up now (False while reconnecting, and once closed)."""
        return self._wire.connected

    @property
    def max_payload(self) -> int:
        """The connected server's max_payload: the largest commit it takes, in bytes."""
        return self._wire.max_payload

    @property
    def tap(self) -> TapPoint:
        """Where faults are put on this client's connection, for tests:
        `angzarr_es.testing.faults` uses it."""
        return TapPoint(self._wire)

    @property
    def subscription_count(self) -> int:
        """How many subscriptions the connection holds now: the reply inbox, and
        what each running projector, catch-up and `bus` subscription holds.
        Back to where it was once they are stopped and closed (a leak check)."""
        return self._wire.subscription_count

    @property
    def cache_stats(self) -> CacheStats:
        """The hot-aggregate cache now (`Health.cache` without asking the server)."""
        return self._ctx.hot.stats()

    def store(self, domain: str, edition: str | None = None) -> EventStore:
        """The event store of one domain, on the main timeline or on `edition`.

        An edition is an independent timeline of the same aggregates (own
        sequences from 0, own concurrency checks); None, "" and "angzarr" name
        the main timeline.

        Raises:
            InvalidDomain: `domain` is not one safe subject token.
            InvalidEdition: `edition` is not one safe subject token.
        """
        return EventStore(self._ctx, domain, edition)

    async def list_domains(self) -> AsyncIterator[str]:
        """Every domain with at least one main-timeline aggregate, in order.

        Pages through the server's subject index (one request per 100,000
        aggregates of all domains); holds one page and the set of domain names.
        In per-domain layout: the domain streams of the stream list (ours and
        angzarr's), in domain order, each asked for one aggregate.

        Raises:
            StoreTimeout, StoreUnavailable, StoreError
        """
        if self._ctx.streams.per_domain:
            async for domain in self._domain_streams_with_events():
                yield domain
            return
        seen: set[str] = set()
        subjects = self._subjects
        pages = _discovery.subject_pages(
            self._wire, self._ctx.streams.single, subjects.all_aggregates()
        )
        async with contextlib.aclosing(pages):
            async for page in pages:
                for subject in page:
                    domain = subjects.domain_of(subject)
                    if domain not in seen:
                        seen.add(domain)
                        yield domain
                del page  # before the next page arrives: hold one at a time

    async def _domain_streams_with_events(self) -> AsyncIterator[str]:
        """Per-domain layout: the domains whose streams hold a main-timeline
        aggregate (one STREAM.LIST per 256 streams, one Direct Get per domain)."""
        for domain, stream in await _provision.domain_streams(self._wire, self._ctx.streams):
            state = self._ctx.state(domain)
            if not state.readable and not await check_stream(self._ctx, state, write=False):
                continue
            found = await self._wire.reads.direct_last(
                stream, self._subjects.domain_aggregates(domain)
            )
            if found is not None:
                yield domain

    async def has_events(self, domain: str) -> bool:
        """Whether any aggregate of `domain`, on any timeline, has a commit.

        One Direct Get of the last message under the domain's subjects; any
        replica may answer, so a commit made a moment ago may not show yet.

        Raises:
            InvalidDomain: `domain` is not one safe subject token.
            StoreTimeout, StoreUnavailable, StoreError
        """
        everything = self._subjects.domain_all(domain)
        state = self._ctx.state(domain)
        if not state.readable and not await check_stream(self._ctx, state, write=False):
            return False  # per-domain layout: the domain has no stream yet
        return await self._wire.reads.direct_last(state.stream, everything) is not None

    async def events_by_correlation(
        self, correlation_id: str, *, edition: str | None = None
    ) -> dict[tuple[str, str], list[RecordedEvent]]:
        """The events of every commit stamped `correlation_id`, per (domain, root).

        Across domains, on the main timeline or on `edition`. Aggregates come in
        the order of their first such commit, events in sequence order.

        Raises:
            InvalidAggregateId: empty or oversized `correlation_id`.
            InvalidEdition, CodecError, StoreTimeout, StoreUnavailable, StoreError
        """
        edition = validate_edition(edition)
        correlation_token(correlation_id)  # checked before anything is sent
        if not self._ctx.streams.per_domain:
            state = self._ctx.state("")
            if not state.readable:
                await check_stream(self._ctx, state, write=False)
        return await _correlation.by_correlation(
            self._wire, self._ctx.streams, correlation_id, edition
        )

    async def index_correlation(self, delivery: Delivery) -> None:
        """Add the correlation index entry of a commit another writer stored
        without one, so that `events_by_correlation` finds it.

        angzarr's bus stamps the correlation id (cover and `Angzarr-Correlation`
        header) but writes no index entry. Run this as the handler of one
        durable projector over everything, e.g.
        `client.projector("angzarr-es-correlation-index", filters.everything(),
        client.index_correlation)`, or `angzarr-es index-correlation`. This
        store's own commits, and commits without a correlation id, are passed
        over; a repeated delivery writes an entry the reader ignores.

        Raises:
            StoreTimeout, StoreUnavailable, StoreError: the entry was not stored
                (a projector retries the delivery).
        """
        await _correlation.index_commit(
            self._ctx, delivery.subject, delivery.stream_sequence, delivery.book, delivery.headers
        )

    async def delete_edition(self, edition: str) -> int:
        """Delete every event and snapshot of `edition`, in every domain.

        Returns the number of commits removed. Other processes notice on
        their next read or append of each aggregate (one stream-leader read).

        Raises:
            InvalidEdition: bad name, or the main timeline ("", "angzarr").
            StoreTimeout, StoreUnavailable, StoreError
        """
        name = validate_edition(edition)
        if not name:
            raise InvalidEdition("the main timeline cannot be deleted")
        return await _editions.delete(self._ctx, self._subjects, name)

    # -- the bus (angzarr_es.bus) ---------------------------------------------

    @property
    def bus(self) -> Bus:
        """Publish (core mode) and live subscriptions."""
        if self._bus is None:
            self._bus = Bus(self._wire, self._config.nats)
        return self._bus

    def _projector_config(self) -> NatsConfig:
        return self._config.nats

    def _make_projector(self, settings: ProjectorSettings, handler: Handler) -> Projector:
        self._need_jetstream("projectors")
        projector = make_projector(
            self._wire, self._config.nats, settings, handler, self._ctx.observer
        )
        self._owned.add(projector)
        return projector

    def subscribe(
        self, filter: FilterLike, *, start: Start = "all", on_skip: SkipHandler | None = None
    ) -> CatchUp:
        """Catch-up subscription: history from `start`, then live commits.

        Use as `async with client.subscribe(f) as sub: async for d in sub: ...`;
        leaving the block deletes its ephemeral consumer. A message on the
        filter that is not a commit goes to `on_skip` (default: a logged
        warning) and the iteration goes on.

        Raises:
            ConfigError: the bus is in core mode (there is no history).
            ValueError, TypeError: invalid `start`; an `on_skip` that is an
                `async def` (it is called, not awaited).
        """
        self._need_jetstream("catch-up subscriptions")
        subject = self.bus.filter(filter)
        sub = make_catch_up(self._wire, self._config.nats, subject, start, on_skip)
        self._owned.add(sub)
        return sub

    def _need_jetstream(self, what: str) -> None:
        if not self._config.nats.jetstream:
            raise ConfigError(f"{what} need JetStream ([bus.nats] jetstream = true)")

    async def close(self, *, drain_timeout: float | None = 30.0) -> None:
        """Stop what was made from this client, then close the connection.

        Projectors stop together (running handlers finish and ack, each
        projector within `drain_timeout`; handlers an earlier stop left running
        are waited for too); catch-up and `bus` subscriptions close. Called
        from a projector's handler, it returns once the rest is stopped, and
        the connection closes when that handler has settled its commit.
        """
        me = self._owned.caller()
        try:
            await self._owned.stop(self._bus.subscriptions if self._bus else (), drain_timeout)
        finally:
            if me is not None:
                # Our caller's commit is acked when its handler returns.
                close_after(me, self._wire.close)
            else:
                await self._wire.close()

    async def health(
        self, *, monitor_url: str | None = None, lag_threshold: int = DEFAULT_LAG_THRESHOLD
    ) -> Health:
        """A typed summary: server reachable, JetStream, streams, consumer lags,
        and this client's hot-aggregate cache (`Health.cache`).

        `monitor_url` (default `bus.nats.monitor_url`) adds the server's
        `/varz`, `/connz` and `/jsz`. Never raises for an unhealthy system:
        look at `Health.ok` and `Health.problems`.
        """
        url = self._config.nats.monitor_url if monitor_url is None else monitor_url
        per_domain = self._ctx.streams.per_domain
        found = await check_health(
            self._wire,
            "" if per_domain else self._config.nats.stream_name,
            self._differences,
            required=not per_domain,
            monitor_url=url,
            lag_threshold=lag_threshold,
        )
        return msgspec.structs.replace(found, cache=self.cache_stats)

    def _differences(self, name: str, current: dict[str, Any]) -> dict[str, str] | None:
        """What a stream the store appends to lacks; None for any other stream."""
        return store_differences(self._config.nats, self._wire.server_version, name, current)

    def clear_cache(self) -> None:
        """Forget every aggregate position and cached history this client holds.

        The next append or load of each aggregate reads it from the server.
        Needed only after events were removed in a way the cache cannot
        notice: a purge that kept an aggregate's last commit but not its
        first ones (docs/operations.md, "The hot-aggregate cache").
        """
        self._ctx.cache.clear()
        self._ctx.hot.clear()

    # -- provisioning --------------------------------------------------------

    async def stream_settings(self, name: str, *, what: str = "stream") -> dict[str, Any] | None:
        """Stream `name`'s configuration as the server reports it; None if there is none.

        Raises:
            StoreError: any other refusal (the message names it `what`).
            StoreTimeout, StoreUnavailable
        """
        return await self._wire.js.stream_settings(name, what)

    def stream_config(self, domain: str = "") -> m.StreamConfig:
        """The event stream's configuration as `provision()` applies it: in
        per-domain layout, `domain`'s stream (the correlation index's
        without a domain).

        Raises:
            InvalidDomain: `domain` is not one safe subject token.
        """
        return store_stream_config(self._config.nats, self._wire.server_version, domain)

    async def plan_provision(
        self, *, bus: bool = False, domains: Sequence[str] = ()
    ) -> ProvisionPlan:
        """What `provision()` would do, changing nothing: the event stream (the
        plan's `action`, `config`, `changes`, ...) and the snapshot stream; with
        `bus`, in JetStream mode, also what `bus.provision()` would do to the
        dead-letter stream and the configured consumers.

        In per-domain layout (angzarr's) the plan's first stream is the
        correlation index's; `plan.domains` lists every domain stream that
        exists (angzarr's too: they would be adopted, i.e. updated in place
        to the store's settings) and those of `domains` (created).

        Raises:
            InvalidDomain: a bad name in `domains`.
            ServerTooOld: the server lacks batch Direct Get (needs >= 2.11).
            StoreUnavailable: JetStream is not enabled.
        """
        return await _provision.plan(self._wire, self._config.nats, bus=bus, domains=domains)

    async def provision(self, *, domains: Sequence[str] = ()) -> ProvisionPlan:
        """Create the event stream, or update it to the store's settings, and
        create or update the snapshot stream. Idempotent.

        In per-domain layout (angzarr's): the correlation and snapshot
        streams, the streams of `domains` (created if missing) and every
        domain stream that exists, angzarr's included (adopted: updated in
        place, e.g. `allow_direct` turned on; `plan.domains[i].changes` says
        what changed, and an update the server refuses leaves that stream as
        it is, with action "kept").

        Returns the plan it carried out (`plan_provision()`).

        Raises:
            InvalidDomain: a bad name in `domains`.
            ServerTooOld: the server lacks batch Direct Get (needs >= 2.11).
            StoreUnavailable: JetStream is not enabled.
            StreamConfigError: an existing stream has settings that cannot be
                changed to the store's (retention, storage); or other
                streams capture its subjects (single layout beside angzarr's
                per-domain streams: the message says to set
                `stream_layout = "per-domain"`).
        """
        plan = await self.plan_provision(domains=domains)
        done = await _provision.apply(self._wire, plan)
        provisioned(self._ctx, [s.domain for s in done.domains if s.action != "kept"])
        return done
