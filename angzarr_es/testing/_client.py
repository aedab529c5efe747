"""`InMemoryClient`: `Client`'s surface over one in-memory world."""

from __future__ import annotations

import datetime as dt
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Literal

from angzarr_es import _provision
from angzarr_es._codec import RecordedEvent
from angzarr_es._lifecycle import ClosesOnExit
from angzarr_es._provision import ConsumerPlan, ProvisionPlan, StreamPlan
from angzarr_es._types import check_clock
from angzarr_es.bus import Handler, ProjectorSettings, SkipHandler, Start, Subscription
from angzarr_es.bus._factory import ProjectorFactory
from angzarr_es.bus._owned import stop_together
from angzarr_es.config import Config, NatsConfig
from angzarr_es.errors import InvalidEdition
from angzarr_es.filters import FilterLike
from angzarr_es.subjects import correlation_token, decode_root, validate_domain, validate_edition
from angzarr_es.testing._bus import DeadLetter, InMemoryBus, InMemoryCatchUp, InMemoryProjector
from angzarr_es.testing._store import InMemoryEventStore
from angzarr_es.testing._world import World

__all__ = ["InMemoryClient"]

log = logging.getLogger("angzarr_es")

# The server the in-memory world stands for, in plans (atomic batches: 2.12).
SERVER_VERSION = (2, 12, 0)


class InMemoryClient(ClosesOnExit, ProjectorFactory[InMemoryProjector]):
    """`Client` over one in-memory world: stores, discovery, correlation,
    editions, `provision`, `close` and `async with`, and a bus (projectors,
    catch-up and live subscriptions) that delivers the world's commits in
    order (see `angzarr_es.testing` for what it leaves out).

    `config` gives the subject prefix, `snapshot_history`, `type_url_prefix`
    and the `[[bus.nats.consumers]]` entries; nothing connects anywhere.
    `clock` is as in `connect()`.

    Raises:
        TypeError: `clock` is not a function returning a timezone-aware datetime.
    """

    def __init__(
        self,
        *,
        config: Config | None = None,
        snapshot_history: int | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self._config = config if config is not None else Config()
        nats = self._config.nats
        history = nats.snapshot_history if snapshot_history is None else snapshot_history
        self._world = World(
            prefix=nats.subject_prefix,
            snapshot_history=history,
            type_url_prefix=nats.type_url_prefix,
            uuid_roots=nats.stream_layout == "per-domain",
            clock=check_clock(clock),
        )
        self._bus = InMemoryBus(self._world, nats)
        self._provisioned = False
        self._named: set[str] = set()  # domains given to provision(domains=...)
        # What close() stops first.
        self._owned: weakref.WeakSet[InMemoryProjector | InMemoryCatchUp] = weakref.WeakSet()
        self.dead_letters: list[DeadLetter] = []
        """Commits the projectors gave up on, in order (the dead-letter stream's part)."""

    @property
    def config(self) -> Config:
        """The configuration this client was made with."""
        return self._config

    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
        return self._world.closed

    def store(self, domain: str, edition: str | None = None) -> InMemoryEventStore:
        """See `Client.store`."""
        return InMemoryEventStore(domain, edition, world=self._world)

    async def list_domains(self) -> AsyncIterator[str]:
        """See `Client.list_domains`."""
        self._world.check_open()
        for domain in sorted({k[0] for k in self._world.events if not k[1]}):
            yield domain

    async def has_events(self, domain: str) -> bool:
        """See `Client.has_events`."""
        validate_domain(domain)
        self._world.check_open()
        return any(k[0] == domain for k in self._world.events)

    async def events_by_correlation(
        self, correlation_id: str, *, edition: str | None = None
    ) -> dict[tuple[str, str], list[RecordedEvent]]:
        """See `Client.events_by_correlation`."""
        correlation_token(correlation_id)
        wanted = validate_edition(edition)
        self._world.check_open()
        out: dict[tuple[str, str], list[RecordedEvent]] = {}
        for commit in self._world.log:
            domain, commit_edition, token = commit.key
            if commit.correlation_id != correlation_id or commit_edition != wanted:
                continue
            if commit.key not in self._world.events:
                continue  # deleted with its edition
            out.setdefault((domain, decode_root(token)), []).extend(commit.events)
        return out

    async def delete_edition(self, edition: str) -> int:
        """See `Client.delete_edition`."""
        name = validate_edition(edition)
        if not name:
            raise InvalidEdition("the main timeline cannot be deleted")
        world = self._world
        world.check_open()
        doomed = [k for k in world.events if k[1] == name]
        purged = 0
        for key in doomed:
            del world.events[key]
            purged += world.commits.pop(key, 0)
            world.snapshots.pop(key, None)
        world.log = [c for c in world.log if c.key[1] != name]
        world.keyed = {k: v for k, v in world.keyed.items() if k[0][1] != name}
        world.purge_edition(name)
        return purged

    # -- the bus -------------------------------------------------------------

    @property
    def bus(self) -> InMemoryBus:
        """Live subscriptions (`bus.subscribe`); `bus.publish` is refused, as in JetStream mode."""
        return self._bus

    def _projector_config(self) -> NatsConfig:
        return self._config.nats

    def _make_projector(self, settings: ProjectorSettings, handler: Handler) -> InMemoryProjector:
        projector = InMemoryProjector(self._world, settings, handler, self.dead_letters)
        self._owned.add(projector)
        return projector

    def subscribe(
        self, filter: FilterLike, *, start: Start = "all", on_skip: SkipHandler | None = None
    ) -> InMemoryCatchUp:
        """See `Client.subscribe`.

        Raises:
            ValueError, TypeError: invalid `start`; an `async def` `on_skip`.
        """
        sub = InMemoryCatchUp(self._world, self._bus.filter(filter), start, on_skip=on_skip)
        self._owned.add(sub)
        return sub

    # -- provisioning and closing ----------------------------------------------------

    async def plan_provision(
        self, *, bus: bool = False, domains: Sequence[str] = ()
    ) -> ProvisionPlan:
        """What `provision()` would do: create the streams the first time,
        nothing afterwards (the world keeps every event; see `Client.plan_provision`).
        In per-domain layout: the correlation and snapshot streams, and one
        domain stream per domain written to or named in `domains`."""
        nats = self._config.nats
        action: Literal["create", "none"] = "none" if self._provisioned else "create"
        names = sorted({validate_domain(d) for d in domains} | self._domains)
        per_domain = nats.stream_layout == "per-domain"
        first = (
            _provision.correlation_stream_config(nats)
            if per_domain
            else _provision.event_stream_config(nats, SERVER_VERSION)
        )
        streams = [
            StreamPlan(
                role="correlation stream" if per_domain else "event stream",
                action=action,
                config=first,
            ),
            StreamPlan(
                role="snapshot stream",
                action=action,
                config=_provision.snapshot_stream_config(nats),
            ),
        ]
        if per_domain:
            streams += [
                StreamPlan(
                    role="domain stream",
                    domain=d,
                    action="none" if d in self._domains else "create",
                    config=_provision.event_stream_config(nats, SERVER_VERSION, d),
                )
                for d in names
            ]
        consumers = [
            ConsumerPlan(
                name=spec.name,
                filter=spec.filter,
                max_deliver=spec.max_deliver,
                ack_wait=spec.ack_wait,
                exists=spec.name in self._world.durables,
                action="none" if spec.name in self._world.durables else "create",
            )
            for spec in nats.consumers
            if bus
        ]
        return ProvisionPlan(streams=streams, consumers=consumers)

    async def provision(self, *, domains: Sequence[str] = ()) -> ProvisionPlan:
        """See `Client.provision`: the plan, carried out (there is nothing to create)."""
        self._world.check_open()
        plan = await self.plan_provision(domains=domains)
        self._provisioned = True
        self._named.update(domains)
        return plan

    @property
    def _domains(self) -> set[str]:
        """Domains whose (imagined) streams exist: written to, or provisioned."""
        return {k[0] for k in self._world.events} | self._named

    async def close(self, *, drain_timeout: float | None = 30.0) -> None:
        """Stop the projectors (each within `drain_timeout`) and close the
        subscriptions made here; the stores' calls then raise `StoreUnavailable`."""

        async def shut(thing: InMemoryProjector | InMemoryCatchUp | Subscription) -> None:
            if isinstance(thing, InMemoryProjector):
                await thing.stop(drain_timeout=drain_timeout)
            elif isinstance(thing, InMemoryCatchUp):
                await thing.aclose()
            else:
                await thing.close()

        await stop_together([*self._owned, *self._bus.subscriptions], shut)
        self._world.closed = True
        self._world.notify()
