"""Test doubles for users' unit tests: the client, its stores and its bus in memory.

    client = angzarr_es.testing.InMemoryClient()      # or InMemoryClient(config=...)
    async with client:
        await client.provision()
        players = client.store("player")
        await players.append(pid, [event], expected=0)
        async with client.projector("p", filters.domain("player"), handle) as p:
            await p.wait(lambda s: s.handled >= 1)

`InMemoryClient` stands in for `Client`: stores per domain and edition
(`InMemoryEventStore`, the same results and errors:
tests/integration/test_contract.py runs every contract test on both),
discovery, correlation, deleting editions, `provision`, `close` and
`async with`, `projector`, `subscribe` and `bus.subscribe`. Each commit gets
an increasing `stream_sequence`, and the bus delivers the commits, decoded
from the same bytes the JetStream store writes, in stream order. It leaves
out what only a server has (`health`, `stream_settings`, `stream_config`,
`observer`, `server_version`, `connected_url`, core mode's `bus.publish`)
and timing: handlers run one at a time, a failed delivery is retried at once
up to `max_deliver`, then kept in `InMemoryClient.dead_letters`.
`InMemoryEventStore(domain)` alone is a store with a world of its own.

`angzarr_es.testing.faults` is for tests against a real server: a client's
requests and batch reads handed to the test, to lose, refuse or change.
"""

from angzarr_es.testing._bus import DeadLetter, InMemoryBus, InMemoryCatchUp, InMemoryProjector
from angzarr_es.testing._client import InMemoryClient
from angzarr_es.testing._store import InMemoryEventStore

__all__ = [
    "DeadLetter",
    "InMemoryBus",
    "InMemoryCatchUp",
    "InMemoryClient",
    "InMemoryEventStore",
    "InMemoryProjector",
]
