"""A three-server JetStream cluster on loopback, for fault-injection tests:
`angzarr_es.embedded.EmbeddedCluster` (each server with its own temporary
store dir, a unique server_name and fixed client and route ports, so that a
restarted server comes back on the same client port and clients reconnect),
with faults and stream-state helpers.

    with Cluster(3) as cluster:
        leader = await cluster.stream_leader(client, "angzarr-events")
        cluster.kill(leader)
        await cluster.wait_for_leader(client, "angzarr-events", not_in={leader})
        cluster.restart(leader)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import nats.errors

import angzarr_es
from angzarr_es.config import Config
from angzarr_es.embedded import EmbeddedCluster
from angzarr_es.errors import StoreError
from tests.support import jsadmin
from tests.support.configs import fresh_config

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float, what: str, every: float = 0.05
) -> T:
    """Poll `probe` until it returns something other than None; fail after `timeout`.

    Errors raised by the probe count as "not yet" (a cluster in election
    answers with timeouts and 503s), the store's and nats-py's (jsadmin's).
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            got = await probe()
        except (StoreError, nats.errors.Error, TimeoutError, ConnectionError) as exc:
            got, last = None, exc
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        # Polling interval, not a wait for an event: the condition is re-checked.
        await asyncio.sleep(every)


class _ClusterInfo(msgspec.Struct):
    leader: str = ""
    replicas: list[dict[str, Any]] = []


class _Info(msgspec.Struct):
    cluster: _ClusterInfo | None = None
    state: dict[str, Any] = {}
    error: dict[str, Any] | None = None


_decode_info = msgspec.json.Decoder(_Info).decode


class Cluster(EmbeddedCluster):
    """`size` clustered nats-servers with JetStream, named n1..nN, with the
    faults and stream-state helpers the tests use."""

    def __init__(self, size: int = 3, *, name: str = "angzarr-test") -> None:
        super().__init__(size, name=name)

    # -- faults ----------------------------------------------------------------

    def kill(self, name: str) -> None:
        """SIGKILL server `name` (a crash); its store dir is kept."""
        self.servers[name].kill()

    def restart(self, name: str) -> None:
        """Start server `name` again on the same ports and store dir."""
        server = self.servers[name]
        server.stop()
        server.start()

    def pause(self, name: str) -> None:
        """SIGSTOP server `name`: alive but silent, as a hung or partitioned node.

        Returns once the kernel reports it stopped: a signal is delivered
        asynchronously, and a request sent right after `kill()` was seen
        answered by the "paused" server.
        """
        server = self.servers[name]
        server.signal(signal.SIGSTOP)
        if server.proc is not None and server.proc.poll() is None:
            # Our child: wait for its stop to be reported, leaving it waitable.
            os.waitid(os.P_PID, server.proc.pid, os.WSTOPPED | os.WNOWAIT)

    def resume(self, name: str) -> None:
        self.servers[name].signal(signal.SIGCONT)

    def ensure_running(self) -> None:
        """Resume paused servers and restart dead ones."""
        for server in self.servers.values():
            server.signal(signal.SIGCONT)
            if not server.running:
                server.start()

    # -- stream state ----------------------------------------------------------

    @staticmethod
    async def stream_info(client: angzarr_es.Client, stream: str) -> _Info:
        return _decode_info(await jsadmin.stream_info(client, stream))

    async def stream_leader(self, client: angzarr_es.Client, stream: str) -> str | None:
        """The name of the stream's leader, or None if there is none now."""
        info = await self.stream_info(client, stream)
        if info.cluster is None or not info.cluster.leader:
            return None
        return info.cluster.leader

    async def wait_for_leader(
        self,
        client: angzarr_es.Client,
        stream: str,
        *,
        not_in: frozenset[str] = frozenset(),
        current: bool = False,
        timeout: float = 30.0,
    ) -> str:
        """Poll stream info until it names a leader outside `not_in`.

        With `current`, also wait until every replica is current (caught up).
        """

        async def probe() -> str | None:
            info = await self.stream_info(client, stream)
            if info.cluster is None or not info.cluster.leader or info.cluster.leader in not_in:
                return None
            if current:
                reps = info.cluster.replicas
                if len(reps) < len(self.servers) - 1 or not all(
                    r.get("current") and not r.get("offline") for r in reps
                ):
                    return None
            return info.cluster.leader

        return await eventually(probe, timeout=timeout, what=f"a leader for stream {stream}")

    async def leader_and_follower(self, cfg: Config) -> tuple[str, str]:
        """The stream's leader, once every replica is current, and a follower."""
        async with await angzarr_es.connect(config=cfg) as client:
            leader = await self.wait_for_leader(client, cfg.nats.stream_name, current=True)
        return leader, next(n for n in self.servers if n != leader)


@contextlib.asynccontextmanager
async def r3_stream(cluster: Cluster, *, own_dlq: bool = False) -> AsyncIterator[Config]:
    """A fresh R3 event stream (and, with `own_dlq`, a dead-letter stream of its
    own) on a healthy cluster; yields its config and deletes the streams after."""
    cluster.ensure_running()
    cfg = fresh_config(",".join(cluster.urls), replicas=3, request_timeout=1.0)
    if own_dlq:
        nats = msgspec.structs.replace(cfg.nats, dlq_stream=cfg.nats.stream_name + "-dlq")
        cfg = Config(bus=msgspec.structs.replace(cfg.bus, nats=nats))
    async with await angzarr_es.connect(config=cfg) as admin:

        async def provisioned() -> bool:
            await admin.provision()
            return True

        await eventually(provisioned, timeout=30, what="the R3 stream to be created")
        await cluster.wait_for_leader(admin, cfg.nats.stream_name, current=True)
        yield cfg
        cluster.ensure_running()
        streams = [cfg.nats.stream_name] + ([cfg.nats.dlq_stream] if own_dlq else [])
        for stream in streams:

            async def deleted(name: str = stream) -> bool:
                await jsadmin.delete_stream(admin, name)
                return True

            await eventually(deleted, timeout=30, what=f"delete {stream}")


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def library_bytes(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes still held that were allocated by angzarr_es or nats-py code."""
    mine = [
        tracemalloc.Filter(True, f"*{os.sep}angzarr_es{os.sep}*"),
        tracemalloc.Filter(True, f"*{os.sep}nats{os.sep}*"),
    ]
    stats = snapshot.filter_traces(mine).statistics("lineno")
    if os.environ.get("ANGZARR_SOAK_DEBUG"):
        for stat in stats[:12]:
            print(stat)
    return sum(stat.size for stat in stats)
