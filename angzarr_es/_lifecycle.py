"""`async with` for what the library hands out, written once.

ClosesOnExit    gives the object; leaving awaits `close()`   (Client, Subscription)
OpensOnEnter    awaits `open()`; leaving awaits `aclose()`   (CatchUp)
StartsOnEnter   awaits `start()`; leaving awaits `stop()`    (Projector)
CleansUpOnExit  `with`: calls `start()`; leaving calls `cleanup()`
                                                  (EmbeddedServer, EmbeddedCluster)
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self, TypeVar

__all__ = ["CleansUpOnExit", "ClosesOnExit", "OpensOnEnter", "StartsOnEnter"]


class _Closes(Protocol):
    async def close(self) -> None: ...


class _Opens(Protocol):
    async def open(self) -> None: ...

    async def aclose(self) -> None: ...


class _Starts(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _Runs(Protocol):
    def start(self) -> Self: ...

    def cleanup(self) -> None: ...


_O = TypeVar("_O", bound=_Opens)
_S = TypeVar("_S", bound=_Starts)
_R = TypeVar("_R", bound=_Runs)


class ClosesOnExit:
    """`async with x:` gives `x` and awaits `x.close()` on leaving."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self: _Closes,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class OpensOnEnter:
    """`async with x:` awaits `x.open()`, gives `x`, and awaits `x.aclose()` on leaving."""

    async def __aenter__(self: _O) -> _O:
        await self.open()
        return self

    async def __aexit__(
        self: _Opens,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class StartsOnEnter:
    """`async with x:` awaits `x.start()`, gives `x`, and awaits `x.stop()` on leaving."""

    async def __aenter__(self: _S) -> _S:
        await self.start()
        return self

    async def __aexit__(
        self: _Starts,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class CleansUpOnExit:
    """`with x:` calls `x.start()` and gives what it returns; leaving calls `x.cleanup()`."""

    def __enter__(self: _R) -> _R:
        return self.start()

    def __exit__(
        self: _Runs,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
