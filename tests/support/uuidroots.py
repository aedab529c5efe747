"""A client whose aggregate ids are UUIDs underneath, for running the
contract suite in the per-domain layout (which refuses any other id, as
angzarr reads roots as 16 bytes).

Every valid string id `x` that is not a UUID's text becomes
`uuid5(NAMESPACE, x)` on the way in, and that UUID's text becomes `x` again
on the way out (listed roots, correlation keys, deliveries), so the tests
read the same either way. Invalid ids (empty, too long, not a str) pass
through untouched, so the store's own refusal is what the test sees.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec

from angzarr_es import Delivery, filters
from angzarr_es.errors import InvalidAggregateId
from angzarr_es.filters import Filter
from angzarr_es.subjects import canonical_root, decode_root, encode_root

NAMESPACE = uuid.UUID("6f1b9a52-58a4-4c55-9a8e-2e0f7c1d3b10")


class Ids:
    """The two-way map of one client."""

    def __init__(self) -> None:
        self.back: dict[str, str] = {}

    def into(self, root: Any) -> Any:
        if not isinstance(root, str) or not root:
            return root
        try:
            encode_root(root)
        except InvalidAggregateId:
            return root
        text = canonical_root(root)
        try:
            uuid.UUID(text)
        except ValueError:
            pass
        else:
            if str(uuid.UUID(text)) == text:
                return root
        made = str(uuid.uuid5(NAMESPACE, root))
        self.back[made] = root
        return made

    def out(self, root: str) -> str:
        return self.back.get(root, root)

    def delivery(self, d: Delivery) -> Delivery:
        return msgspec.structs.replace(d, root=self.out(d.root))


class _Seen:
    """One of a client's parts seen through `Ids`: what is not overridden
    goes to the part itself."""

    def __init__(self, inner: Any, ids: Ids) -> None:
        self._inner = inner
        self._ids = ids

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class UuidStore(_Seen):
    def subject(self, root: Any) -> str:
        return str(self._inner.subject(self._ids.into(root)))

    async def append(self, root: Any, *args: Any, **kwargs: Any) -> Any:
        return await self._inner.append(self._ids.into(root), *args, **kwargs)

    async def load(self, root: Any, *args: Any, **kwargs: Any) -> Any:
        return await self._inner.load(self._ids.into(root), *args, **kwargs)

    async def next_sequence(self, root: Any, **kwargs: Any) -> int:
        return int(await self._inner.next_sequence(self._ids.into(root), **kwargs))

    def iter(self, root: Any, *args: Any, **kwargs: Any) -> Any:
        return self._inner.iter(self._ids.into(root), *args, **kwargs)

    async def save_snapshot(self, root: Any, *args: Any, **kwargs: Any) -> None:
        await self._inner.save_snapshot(self._ids.into(root), *args, **kwargs)

    async def list_roots(self) -> AsyncIterator[str]:
        async for root in self._inner.list_roots():
            yield self._ids.out(root)


class UuidCatchUp(_Seen):
    @property
    def subject(self) -> str:
        head, _, token = str(self._inner.subject).rpartition(".")
        return f"{head}.{self._ids.out(token)}"

    def __aiter__(self) -> UuidCatchUp:
        return self

    async def __anext__(self) -> Delivery:
        return self._ids.delivery(await self._inner.__anext__())

    async def __aenter__(self) -> UuidCatchUp:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.__aexit__(*exc)


class UuidBus(_Seen):
    def subject(self, domain: str, root: Any) -> str:
        return str(self._inner.subject(domain, self._ids.into(root)))

    async def subscribe(self, f: Any, handler: Any, **kwargs: Any) -> Any:
        return await self._inner.subscribe(f, _handler(handler, self._ids), **kwargs)


def _handler(handler: Callable[[Delivery], Awaitable[None]], ids: Ids) -> Any:
    async def call(d: Delivery) -> None:
        await handler(ids.delivery(d))

    return call


class UuidClient:
    """A client (in-memory or real) seen through `Ids`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._ids = Ids()

    @property
    def inner(self) -> Any:
        """The client itself, for what the tests ask of it with ids unmapped."""
        return self._inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def store(self, domain: str, edition: str | None = None) -> UuidStore:
        return UuidStore(self._inner.store(domain, edition), self._ids)

    @property
    def bus(self) -> UuidBus:
        return UuidBus(self._inner.bus, self._ids)

    def projector(self, name: str, *args: Any, **kwargs: Any) -> Any:
        *rest, handler = args
        return self._inner.projector(name, *rest, _handler(handler, self._ids), **kwargs)

    def subscribe(self, f: Any, **kwargs: Any) -> UuidCatchUp:
        return UuidCatchUp(self._inner.subscribe(self._filter(f), **kwargs), self._ids)

    def _filter(self, f: Any) -> Any:
        """`filters.aggregate(domain, id)` of a mapped id: the UUID's."""
        if isinstance(f, Filter) and f.tail.count(".") == 1 and not f.tail.endswith(("*", ">")):
            domain, token = f.tail.split(".")
            return filters.aggregate(domain, self._ids.into(decode_root(token)))
        return f

    async def events_by_correlation(self, correlation_id: str, **kwargs: Any) -> Any:
        found = await self._inner.events_by_correlation(correlation_id, **kwargs)
        return {(d, self._ids.out(r)): events for (d, r), events in found.items()}

    async def __aenter__(self) -> UuidClient:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.__aexit__(*exc)
