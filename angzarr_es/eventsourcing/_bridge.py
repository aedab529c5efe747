"""`LoopThread`: one asyncio event loop on a thread of its own, for synchronous callers.

The library's recorders are synchronous and called from many threads at once
(its test cases use ten writers, a hundred threads, and subscription threads);
the NATS client is asyncio. Each call is handed to the loop and waited on with
a timeout. `close()` may be called twice, from any thread (also the loop's
own, through a finalizer), and makes calls in flight fail at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["CallTimeout", "Closed", "LoopThread"]

T = TypeVar("T")

log = logging.getLogger("angzarr_es")


class Closed(Exception):
    """The loop was closed before or during the call."""


class CallTimeout(TimeoutError):
    """A call took longer than its timeout (it was cancelled)."""


class LoopThread:
    """An event loop running on a daemon thread until `close()`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._closed = False
        self._lock = threading.Lock()
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            if tasks:
                self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def in_loop(self) -> bool:
        """Whether the caller runs on the loop's thread."""
        return threading.get_ident() == self._thread.ident

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start `coro` on the loop; its future is cancelled by `close()`.

        Raises:
            Closed: the loop is closed.
        """
        with self._lock:
            if self._closed:
                coro.close()
                raise Closed("closed")
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coro` on the loop and wait for its result.

        Raises:
            Closed: the loop is closed, or was closed while waiting.
            CallTimeout: no result within `timeout` seconds (`coro` was cancelled).
            RuntimeError: called from the loop's own thread (it would wait forever).
            Whatever `coro` raises.
        """
        if self.in_loop():
            coro.close()
            raise RuntimeError("a recorder was called from its own event loop thread")
        future = self.submit(coro)
        # Waited apart from the result: a TimeoutError `coro` raises (a
        # StoreTimeout, with what is known of the outcome) is its own.
        done, _ = concurrent.futures.wait([future], timeout)
        if not done:
            future.cancel()
            raise CallTimeout(f"no result in {timeout:g}s")
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise Closed("closed during the call") from None

    def call_soon(self, callback: Callable[[], object]) -> None:
        """Run `callback` on the loop soon (nothing if the loop is closed)."""
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self.loop.call_soon_threadsafe(callback)

    def close(
        self, shutdown: Callable[[], Coroutine[Any, Any, None]] | None = None, timeout: float = 5.0
    ) -> None:
        """Fail the calls in flight, run `shutdown()` on the loop (at most
        `timeout` seconds), then stop the loop and its thread. Safe to call
        again, and from the loop's own thread (then it does not wait)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._pending)
        for future in pending:
            future.cancel()
        if self.in_loop():
            self.loop.create_task(self._finish(shutdown, timeout))
            return
        try:
            asyncio.run_coroutine_threadsafe(self._finish(shutdown, timeout), self.loop)
        except RuntimeError:  # the loop is already gone
            return
        self._thread.join(timeout + 1.0)

    async def _finish(
        self, shutdown: Callable[[], Coroutine[Any, Any, None]] | None, timeout: float
    ) -> None:
        try:
            if shutdown is not None:
                await asyncio.wait_for(shutdown(), timeout)
        except Exception as exc:  # noqa: BLE001 - closing goes on whatever failed
            log.debug("eventsourcing factory: shutdown failed: %r", exc)
        finally:
            self.loop.stop()
