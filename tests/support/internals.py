"""The tests' one door into the library's internals.

Tests outside `tests/support` touch no private attribute, and outside
`tests/unit` import no private module but in the files listed there with their
reason (`tests/unit/test_test_rules.py` checks both). What they need of the
implementation, to inject a fault where it happens or to see what only the
implementation knows, comes from here, named after what it is for; a rename
inside the package changes this file, not the tests.

    wire(client)            the client's Wire: spy on or replace one of its
                            requests (`wire.publish_commit`, `wire.reads.*`,
                            `wire.js.*`, `wire.mux.request`, ...)
    context(client|store)   the StoreContext a client's stores share: the
                            hot cache's entries (a cache made blind on purpose)
    write_correlation_entry, snapshot_stream_config, append_clock, key_search,
    deposed_leader_wait
                            what the write path and provisioning do, one step of it
    check_capture_every, discover_every
                            timing knobs: the core bus's capture check, how
                            often spanning lanes look for new domain streams

What a user can see is read through the public API instead (`client.connected`,
`client.max_payload`, `client.cache_stats`, `client.subscription_count`,
`projector.stats`, `projector.in_hand`, `store.next_sequence(root, leader=True)`);
what stays here is private for the reasons docs/design.md gives ("How the
tests reach the implementation").

Admin requests of the tests' own (streams, consumers, raw messages) go
through `jsadmin`, on a connection of their own, never through these.
"""

from __future__ import annotations

import pytest

from angzarr_es import Client, EventStore, StreamConfig, _provision
from angzarr_es._nats import Wire
from angzarr_es.bus import _core, _span
from angzarr_es.config import NatsConfig
from angzarr_es.store import StoreContext, _append, _correlation, _keys, _refusals
from angzarr_es.subjects import Subjects


def wire(client: Client) -> Wire:
    """The client's one connection and its requests (the store's, the bus's)."""
    return client._wire


def context(owner: Client | EventStore) -> StoreContext:
    """What the stores of a client share (a store's is its client's)."""
    return owner._ctx


async def write_correlation_entry(
    client: Client, correlation_id: str, subject: str, first_sequence: int
) -> None:
    """Store a correlation index entry as a writer does before its commit
    (a writer that died in between leaves one behind)."""
    nats = client.config.nats
    entry = Subjects(nats.subject_prefix).correlation(correlation_id)
    await _correlation.write_entry(client._wire, nats.stream_name, entry, subject, first_sequence)


def snapshot_stream_config(nats: NatsConfig) -> StreamConfig:
    """The snapshot stream as provisioning makes it."""
    return _provision.snapshot_stream_config(nats)


# -- elsewhere in the package ----------------------------------------------------------


def check_capture_every(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """How long the core bus trusts its last look at whether a stream captures
    its subjects (0: it looks before every publish)."""
    monkeypatch.setattr(_core, "CAPTURE_CHECK_TTL", seconds)


def append_clock(monkeypatch: pytest.MonkeyPatch, clock: object) -> None:
    """What the append path reads the time from (`dt`: `.datetime.now(tz)`, `.UTC`)."""
    monkeypatch.setattr(_append, "dt", clock)


def key_search(monkeypatch: pytest.MonkeyPatch, commits: int) -> None:
    """How many commits of the duplicate window a retry looks its key up in."""
    monkeypatch.setattr(_keys, "KEY_SEARCH", commits)


def deposed_leader_wait(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """How long a refusal that proves nothing is re-checked before an append's
    outcome is reported unknown (a deposed stream leader's window)."""
    monkeypatch.setattr(_refusals, "DEPOSED_LEADER", seconds)


def discover_every(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """How often a projector or catch-up subscription spanning the per-domain
    layout's streams lists them to find a new domain's."""
    monkeypatch.setattr(_span, "DISCOVER_EVERY", seconds)
