"""`EmbeddedCluster`: several clustered nats-servers on loopback (see `angzarr_es.embedded`)."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from pathlib import Path
from typing import Self

from angzarr_es._lifecycle import CleansUpOnExit
from angzarr_es.embedded._server import EmbeddedServer
from angzarr_es.errors import StoreUnavailable

__all__ = ["EmbeddedCluster", "free_ports"]


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports that were free a moment ago."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class EmbeddedCluster(CleansUpOnExit):
    """`size` clustered nats-servers with JetStream on loopback, named n1..nN,
    each with its own store directory under `root` (a temporary one if None).

    Client and route ports are fixed up front (routes must name their peers'
    ports, and a restarted server must come back on the same client port), so
    they are picked by binding port-0 sockets first: free a moment ago, and a
    clash fails the start, which says so.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        root: str | os.PathLike[str] | None = None,
        name: str = "angzarr",
        sync_always: bool = False,
        ready_timeout: float = 30.0,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="angzarr-es-cluster-")
            root = self._tmp.name
        ports = free_ports(2 * size)
        clients, routes = ports[:size], ports[size:]
        peers = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
        self.servers: dict[str, EmbeddedServer] = {}
        for i in range(size):
            sname = f"n{i + 1}"
            self.servers[sname] = EmbeddedServer(
                store_dir=Path(root) / sname,
                port=clients[i],
                monitor_port=None,
                name=sname,
                sync_always=sync_always,
                extra_config=(
                    f"cluster {{\n  name: {name}\n  listen: 127.0.0.1:{routes[i]}\n"
                    f"  routes: [{peers}]\n}}\n"
                ),
                ready_timeout=ready_timeout,
            )

    @property
    def urls(self) -> list[str]:
        return [self.url_of(name) for name in self.servers]

    def url_of(self, name: str) -> str:
        return f"nats://127.0.0.1:{self.servers[name].port}"

    def start(self) -> Self:
        """Start every server side by side (a clustered server is ready only
        once it sees its routes).

        Raises:
            StoreUnavailable: a server did not start (the others are stopped).
        """
        errors: list[StoreUnavailable] = []

        def run(server: EmbeddedServer) -> None:
            try:
                server.start()
            except StoreUnavailable as exc:  # raised below, after the others stop
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(s,)) for s in self.servers.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            self.stop()
            raise errors[0]
        return self

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

    def cleanup(self) -> None:
        """Stop, and remove the temporary root directory if we made it."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
