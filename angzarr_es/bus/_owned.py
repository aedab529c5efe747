"""What a client made (projectors, catch-ups) and its bus's subscriptions:
stopped together when the client closes, before its connection goes."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from angzarr_es.bus._catchup import CatchUp
from angzarr_es.bus._core import Subscription
from angzarr_es.bus._projector import Projector, handler_task

__all__ = ["Owned", "close_after", "stop_together"]

log = logging.getLogger("angzarr_es")

_closing: set[asyncio.Task[None]] = set()  # deferred closes, kept until done


async def stop_together(things: Iterable[Any], stop: Callable[[Any], Awaitable[None]]) -> None:
    """`stop(thing)` for all `things` at once; a failure is logged, and the others still stop."""
    things = list(things)
    results = await asyncio.gather(*(stop(t) for t in things), return_exceptions=True)
    for thing, result in zip(things, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("closing the client: stopping %r failed: %r", thing, result)


def close_after(handler: asyncio.Task[Any], close: Callable[[], Awaitable[None]]) -> None:
    """Await `close()` once `handler` is done, from a task that exists now (so
    that a loop ending meanwhile cancels and awaits it like the others)."""

    async def later() -> None:
        try:
            await asyncio.wait({handler})
        finally:
            await close()

    task = asyncio.get_running_loop().create_task(later())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


class Owned:
    """The projectors and catch-ups one client made (held weakly: one dropped
    unused is not kept alive): without stopping them first, their tasks died
    with the loop."""

    def __init__(self) -> None:
        self._made: weakref.WeakSet[Projector | CatchUp] = weakref.WeakSet()

    def add(self, thing: Projector | CatchUp) -> None:
        self._made.add(thing)

    def caller(self) -> asyncio.Task[Any] | None:
        """The handler of one of these projectors that the caller runs in, if any."""
        me = handler_task()
        if me is None or me.done() or not any(p.runs(me) for p in self._projectors()):
            return None
        return me

    async def stop(
        self, subscriptions: Iterable[Subscription], drain_timeout: float | None
    ) -> None:
        """Stop them and `subscriptions` together: projectors drain (each within
        `drain_timeout`; handlers an earlier stop left running are waited for
        too), catch-ups and subscriptions close."""

        async def shut(thing: Projector | CatchUp | Subscription) -> None:
            if isinstance(thing, Projector):
                await thing.stop(drain_timeout=drain_timeout)
                await thing.settle(drain_timeout)
            elif isinstance(thing, CatchUp):
                await thing.aclose()
            else:
                await thing.close()

        await stop_together([*self._made, *subscriptions], shut)

    def _projectors(self) -> list[Projector]:
        return [p for p in self._made if isinstance(p, Projector)]
