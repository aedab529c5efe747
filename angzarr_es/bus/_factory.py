"""`projector(...)`, shared by every client: its two call forms, and the
settings taken from the arguments, the configuration and the defaults."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Generic, TypeVar, overload

from angzarr_es.bus._delivery import Handler, Start
from angzarr_es.bus._settings import ProjectorSettings
from angzarr_es.config import ConsumerSpec, NatsConfig
from angzarr_es.errors import ConfigError
from angzarr_es.filters import Filter, FilterLike, resolve

__all__ = ["ProjectorFactory"]

P = TypeVar("P")


class ProjectorFactory(abc.ABC, Generic[P]):
    """Makes durable projectors of type P from settings (`Client`, `InMemoryClient`)."""

    @abc.abstractmethod
    def _projector_config(self) -> NatsConfig:
        """The configuration whose `[[bus.nats.consumers]]` entries apply."""

    @abc.abstractmethod
    def _make_projector(self, settings: ProjectorSettings, handler: Handler) -> P:
        """The projector for checked settings."""

    @overload
    def projector(
        self,
        name: str,
        handler: Handler,
        /,
        *,
        concurrency: int = 1,
        max_deliver: int | None = None,
        ack_wait: float | None = None,
        backoff: Sequence[float] | None = None,
        max_ack_pending: int | None = None,
        start: Start = "all",
        partition: tuple[int, int] | None = None,
    ) -> P: ...

    @overload
    def projector(
        self,
        name: str,
        filter: FilterLike,
        handler: Handler,
        *,
        concurrency: int = 1,
        max_deliver: int | None = None,
        ack_wait: float | None = None,
        backoff: Sequence[float] | None = None,
        max_ack_pending: int | None = None,
        start: Start = "all",
        partition: tuple[int, int] | None = None,
    ) -> P: ...

    def projector(
        self,
        name: str,
        filter: FilterLike | Handler,
        handler: Handler | None = None,
        *,
        concurrency: int = 1,
        max_deliver: int | None = None,
        ack_wait: float | None = None,
        backoff: Sequence[float] | None = None,
        max_ack_pending: int | None = None,
        start: Start = "all",
        partition: tuple[int, int] | None = None,
    ) -> P:
        """A durable projector (JetStream mode); run it with `async with`.

        `projector(name, filter, handler)`, or `projector(name, handler)` to
        take the filter from the configuration's `[[bus.nats.consumers]]`
        entry of this `name`. `max_deliver`, `ack_wait`, `backoff` and
        `max_ack_pending` not given come from that entry too, else the
        defaults 5, 30.0 s, (1, 5, 15, 30) s and 1000. See `angzarr_es.bus`
        (its projector module) for the delivery, retry, dead-letter and
        ordering semantics.

        Raises:
            ConfigError: the bus is in core mode (projectors need JetStream),
                or no filter was given and the entry of `name` has none.
            TypeError: `handler` is not an `async def` (nor an object with an
                async `__call__`); a filter without a handler.
            ValueError: invalid settings.
        """
        if handler is None:
            if isinstance(filter, Filter | str):
                raise TypeError(
                    "a projector needs a handler: projector(name, filter, handler), or "
                    "projector(name, handler) with the filter of its [[bus.nats.consumers]] "
                    "entry"
                )
            subject, handler = None, filter
        elif isinstance(filter, Filter | str):
            subject = filter
        else:
            raise TypeError(
                f"a filter must be a Filter or a subject string, got {type(filter).__name__}"
            )
        cfg = self._projector_config()
        spec = next((c for c in cfg.consumers if c.name == name), None)
        if subject is None:
            if spec is None or not spec.filter:
                raise ConfigError(
                    f"projector {name!r} has no filter: pass one (projector(name, filter, "
                    f"handler)) or add a [[bus.nats.consumers]] entry with name = {name!r} "
                    "and a filter"
                )
            subject = spec.filter
        if spec is None:
            spec = ConsumerSpec(name=name, filter="")
        settings = ProjectorSettings(
            name=name,
            subject=resolve(subject, cfg.subject_prefix),
            concurrency=concurrency,
            max_deliver=spec.max_deliver if max_deliver is None else max_deliver,
            ack_wait=spec.ack_wait if ack_wait is None else ack_wait,
            backoff=tuple(spec.backoff if backoff is None else backoff),
            max_ack_pending=spec.max_ack_pending if max_ack_pending is None else max_ack_pending,
            start=start,
            partition=partition,
        )
        return self._make_projector(settings, handler)
