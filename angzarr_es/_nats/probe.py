"""Why nobody served a stream: one STREAM.INFO probe per stream, shared.

A publish answered with status 503 and a Direct Get nobody answers mean the
same thing: no server serves the stream's subjects right now. That is a
missing stream (a permanent misconfiguration: say so, and how to create it),
or a stream without a leader: an election (seconds), or too few replicas up
for a quorum (until they come back). STREAM.INFO tells them apart as far as
the server can (measured on nats-server 2.15, a three-server cluster):

    stream missing            err_code 10059 from the meta leader
    leader killed, electing   no answer (the followers stay silent until they
                              give the leader up), then the new leader answers
    two of three servers down no answer for about 5 s, then the survivor
                              answers "no leader" with itself the only current
                              replica; 10008 when it has no meta leader either

Failures together share one probe per stream, and its answer stands for
PROBE_TTL seconds: a storm of failed appends and reads during an election
costs one STREAM.INFO (of at most PROBE_TIMEOUT) per stream every PROBE_TTL.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import msgspec

from angzarr_es._nats import messages as m
from angzarr_es._nats.api import STREAM_INFO, JetStream
from angzarr_es._nats.errors import (
    CLUSTER_NOT_AVAILABLE,
    JETSTREAM_NOT_ENABLED_FOR_ACCOUNT,
    PROVISION_HINT,
    STREAM_NOT_FOUND,
)
from angzarr_es._nats.mux import Mux
from angzarr_es.errors import StoreError, StoreTimeout, StoreUnavailable

__all__ = ["PROBE_TIMEOUT", "PROBE_TTL", "Diagnosis", "StreamProbe", "diagnose"]

PROBE_TTL = 2.0
"""Seconds a stream's probe answers for every failure on it."""
PROBE_TIMEOUT = 0.25
"""Seconds the probe waits for STREAM.INFO (at most the request timeout)."""


class Diagnosis(NamedTuple):
    """Why a stream was not served: the text, and the JetStream err_code it rests on."""

    reason: str
    err_code: int = 0
    direct_off: bool = False
    """The stream has a leader but no Direct Get: only a read's failure is explained by it."""


def diagnose(stream: str, info: m.StreamInfo) -> Diagnosis:
    """What a STREAM.INFO reply says about a stream nobody served."""
    error = info.error
    if error is not None:
        if error.err_code == STREAM_NOT_FOUND:
            return Diagnosis(
                f"stream {stream} does not exist: create it with {PROVISION_HINT}", STREAM_NOT_FOUND
            )
        if error.err_code == CLUSTER_NOT_AVAILABLE:
            return Diagnosis(
                "no quorum: JetStream has no meta leader (too few of its servers are up, "
                "or they are electing one)",
                CLUSTER_NOT_AVAILABLE,
            )
        if error.err_code == JETSTREAM_NOT_ENABLED_FOR_ACCOUNT:
            return Diagnosis("JetStream is not enabled for this account", error.err_code)
        return Diagnosis(f"stream {stream}: {error.description}", error.err_code)
    if info.config is not None and not info.config.get("allow_direct", False):
        return Diagnosis(
            f"stream {stream} does not serve Direct Get (allow_direct is off): "
            f"turn it on with {PROVISION_HINT}",
            direct_off=True,
        )
    cluster = info.cluster
    if cluster.leader:
        return Diagnosis(
            f"the stream's leader changed (now {cluster.leader}) while this was sent: retry"
        )
    # Without a leader the server that answers lists every replica, itself too.
    replicas = cluster.replicas
    current = sum(1 for r in replicas if r.current and not r.offline)
    if replicas and current < len(replicas) // 2 + 1:
        return Diagnosis(
            f"no quorum: the stream has no leader, and only {current} of its "
            f"{len(replicas)} replicas is up to date (it resumes when a majority is back)"
        )
    return Diagnosis("the stream has no leader: an election is under way")


class StreamProbe:
    """The shared STREAM.INFO probes of one connection."""

    def __init__(self, mux: Mux, js: JetStream) -> None:
        self._mux = mux
        self._js = js
        # Stream -> (when asked, the probe).
        self._probes: dict[str, tuple[float, asyncio.Future[Diagnosis]]] = {}

    def forget(self) -> None:
        """Drop every answer kept (the next failure asks again)."""
        self._probes.clear()

    async def unavailable(self, what: str, stream: str, *, read: bool = False) -> StoreUnavailable:
        """The error for `what`, which nobody serving `stream` answered (`read`:
        a Direct Get, which a stream without `allow_direct` never answers)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        known = self._probes.get(stream)
        if known is None or (known[1].done() and now - known[0] > PROBE_TTL):
            known = (now, loop.create_task(self._probe(stream)))
            self._probes[stream] = known
        found = await asyncio.shield(known[1])
        if found.direct_off and not read:
            found = Diagnosis(
                f"the stream {stream} has a leader; no server took {what!r} (retry, "
                "or check the stream's subjects)"
            )
        return StoreUnavailable(f"{what}: {found.reason}", code=503, err_code=found.err_code)

    async def _probe(self, stream: str) -> Diagnosis:
        try:
            raw = await self._js.call(
                STREAM_INFO.format(stream=stream),
                timeout=min(self._mux.timeout, PROBE_TIMEOUT),
                what=f"look up stream {stream}",
            )
            info = m.stream_info(raw)
        except StoreTimeout:
            return Diagnosis(
                "the stream has no leader: JetStream did not answer in time (an election "
                "is under way, or too few servers are up for a quorum)"
            )
        except StoreUnavailable as exc:
            if exc.code == 503 and self._mux.nc.is_connected:
                return Diagnosis(
                    "no responders: JetStream is not enabled for this account or server"
                )
            return Diagnosis(f"no responders ({exc})")
        except (StoreError, msgspec.DecodeError) as exc:
            return Diagnosis(f"no responders (looking the stream up failed: {exc})")
        return diagnose(stream, info)
