"""A loopback TCP proxy between a client and nats-server that can cut
connections and swallow the server's replies, to inject network faults."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


class FaultProxy:
    """Forwards 127.0.0.1:<port> to the target until told to misbehave.

    - `cut()` closes every proxied connection (the client sees a dropped socket).
    - `swallow = True` silently discards bytes from the server to the client
      (acks and replies never arrive; the client's writes still go through).
    - `rewrite`, when set, is applied to each chunk from the server to the
      client (e.g. the version a server announces in its INFO line).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.swallow = False
        self.swallowed = 0
        self.rewrite: Callable[[bytes], bytes] | None = None
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        for src, dst, down in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pump(src, dst, down))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
        try:
            while data := await src.read(65536):
                if down and self.swallow:
                    self.swallowed += len(data)
                    continue
                if down and self.rewrite is not None:
                    data = self.rewrite(data)
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(dst)
            dst.close()

    def cut(self) -> None:
        """Drop every proxied connection now."""
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
