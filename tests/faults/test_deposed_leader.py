"""A deposed stream leader's answers never turn a stored append into a conflict.

Found by the nemesis (seed 31334969, docs/reliability.md "Under a nemesis"):
the stream leader was paused (SIGSTOP) while the others elected a new one;
for a few hundred milliseconds after it resumed it still believed it led,
and answered from its stale copy of the stream. Both it and the new leader
got the next publish; the new leader stored it, the old one refused it at
once (10071, naming the last sequence of its copy, or 10164 for a proposal
left in flight), and the client took the first answer. The reads that
followed (also answered by the old leader) showed no commit, so a command
that was stored was reported as `ConcurrencyError`: "nothing stored".

Here the real server stores every publish, and the requests the old leader
would have answered are answered from a copy of the stream taken before
(tests/support/wirefaults.py, STALE): deterministic, on one server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

import angzarr_es
from angzarr_es import ANY, AppendResult, ExpectedVersion
from angzarr_es.errors import ConcurrencyError, StoreTimeout
from tests.support import jsadmin
from tests.support.configs import fresh_config
from tests.support.loadgen import _leader_load, tagged
from tests.support.wirefaults import (
    CONFLICTED,
    DROP_REPLY,
    LOSE,
    STALE,
    STALE_IN_PROCESS,
    WireFaults,
)

pytestmark = pytest.mark.timeout(120)

MANY = 400
"""Requests of one kind a deposed leader answers when it never steps down."""
QUICK = 0.2
"""`deposed_leader_wait` (seconds) where a test waits it out."""
STALE_READS = 6
"""Reads of each kind a deposed leader answers before it steps down, where a
keyed retry's reads meet it: more than its key search makes without waiting."""


@dataclass
class Rig:
    client: angzarr_es.Client
    other: angzarr_es.Client
    faults: WireFaults
    stream: str


@pytest.fixture
async def rig(nats_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    """Two clients on a fresh stream, the first one's wire under `faults`;
    `deposed_leader_wait` is the default (2 s) unless the test parametrizes
    `rig` indirectly with another."""
    settings = {"deposed_leader_wait": request.param} if hasattr(request, "param") else {}
    config = fresh_config(nats_url, request_timeout=1.0, **settings)
    async with (
        await angzarr_es.connect(config=config) as client,
        await angzarr_es.connect(config=config) as other,
    ):
        await client.provision()
        faults = WireFaults(client)
        faults.paused = True
        yield Rig(client, other, faults, config.nats.stream_name)
        await jsadmin.delete_stream(other, config.nats.stream_name)
        await jsadmin.delete_stream(other, config.nats.snapshot_stream)


async def reasons(rig: Rig, root: str, edition: str | None = None) -> list[str]:
    hist = await _leader_load(rig.other.store("player", edition), root)
    return [e.event.reason for e in hist.events]  # type: ignore[attr-defined]


async def frozen_behind(rig: Rig, root: str) -> angzarr_es.EventStore:
    """Two commits, the old leader's copy taken, a third acknowledged (by the
    new leader): the client under test has that third one's position cached."""
    store = rig.client.store("player")
    for i in range(2):
        await store.append(root, [tagged(f"before-{i}")], expected=i)
    await rig.faults.freeze(rig.stream, store.subject(root))
    await store.append(root, [tagged("acked")], expected=2)
    return store


async def call(rig: Rig, store: angzarr_es.EventStore, root: str, key: str) -> object:
    rig.faults.paused = False
    try:
        return await store.append(root, [tagged("cmd")], expected=3, idempotency_key=key)
    except (ConcurrencyError, StoreTimeout) as exc:
        return exc
    finally:
        rig.faults.paused = True


def trace(rig: Rig) -> list[str]:
    return rig.faults.numbered()


REFUSALS = [STALE, STALE_IN_PROCESS]
KEYS = ["", "k1"]


@pytest.mark.parametrize("refusal", REFUSALS)
@pytest.mark.parametrize("key", KEYS, ids=["unkeyed", "keyed"])
async def test_a_stored_publish_a_deposed_leader_refuses_is_found_in_the_leaders_reads(
    rig: Rig, refusal: str, key: str
) -> None:
    """Only the publish is answered by the old leader; the new one answers
    the read after it, which shows our commit in the slot: the result, with
    no request more than a genuine conflict costs."""
    store = await frozen_behind(rig, "r")
    rig.faults.reset()
    rig.faults.arm("publish", 1, 1, refusal)
    got = await call(rig, store, "r", key)
    assert isinstance(got, AppendResult), got
    assert (got.first_sequence, got.next_sequence, got.duplicate) == (3, 4, False)
    assert await reasons(rig, "r") == ["before-0", "before-1", "acked", "cmd"]
    assert trace(rig) == ["publish#1", "msg_get#1"]


@pytest.mark.parametrize("refusal", REFUSALS)
@pytest.mark.parametrize("key", KEYS, ids=["unkeyed", "keyed"])
async def test_a_deposed_leader_answering_publish_and_reads_then_stepping_down(
    rig: Rig, refusal: str, key: str
) -> None:
    """The old leader answers the publish and the reads after it (its copy
    lacks the commit this process saw acknowledged: nothing there proves
    anything), then steps down: the publish is sent again (same id) and the
    new leader's answer decides."""
    store = await frozen_behind(rig, "r")
    rig.faults.reset()
    rig.faults.arm("publish", 1, 2, refusal)
    for kind in ("msg_get", "direct_get", "stream_info"):
        rig.faults.arm(kind, 1, 4)
    got = await call(rig, store, "r", key)
    assert isinstance(got, AppendResult), got
    assert (got.first_sequence, got.next_sequence, got.duplicate) == (3, 4, False)
    assert await reasons(rig, "r") == ["before-0", "before-1", "acked", "cmd"]
    assert "publish#3" in trace(rig)


@pytest.mark.parametrize("rig", [QUICK], indirect=True, ids=["wait0.2"])
@pytest.mark.parametrize("refusal", REFUSALS)
@pytest.mark.parametrize("key", KEYS, ids=["unkeyed", "keyed"])
async def test_a_deposed_leader_that_never_steps_down_makes_the_outcome_unknown(
    rig: Rig, refusal: str, key: str
) -> None:
    """Every request answered by the old leader while the call lasts: the
    outcome is unknown (StoreTimeout, retry with the key) once
    `deposed_leader_wait` has passed, never a conflict; the retry, once it
    has stepped down, finds the command stored."""
    store = await frozen_behind(rig, "r")
    rig.faults.reset()
    rig.faults.arm("publish", 1, MANY, refusal)
    for kind in ("msg_get", "direct_get", "stream_info"):
        rig.faults.arm(kind, 1, MANY)
    got = await call(rig, store, "r", key)
    assert isinstance(got, StoreTimeout), got
    assert "retry with the same idempotency key" in str(got)
    assert f"refused for {QUICK:g}s (bus.nats.deposed_leader_wait)" in str(got)
    assert await reasons(rig, "r") == ["before-0", "before-1", "acked", "cmd"]
    if key:
        rig.faults.reset()
        again = await call(rig, store, "r", key)
        assert isinstance(again, AppendResult), again
        assert (again.first_sequence, again.duplicate) == (3, True)


@pytest.mark.parametrize("rig", [1.0], indirect=True, ids=["wait1"])
@pytest.mark.parametrize("cache", ["at_expected", "ahead", "dropped"])
async def test_a_keyed_retry_whose_reads_a_deposed_leader_answers_finds_its_commit(
    rig: Rig, cache: str
) -> None:
    """A keyed command stored, its call reported StoreTimeout; its retry (the
    same key and `expected`) reads the aggregate, and the old leader answers:
    its copy shows the aggregate behind `expected`, where every attempt of the
    command lands. That proves nothing: the reads are re-checked until the old
    leader has stepped down, and the retry returns the stored commit
    (`duplicate`), never a ConcurrencyError.

    The first call's acks were lost, and the check after them too. "at_expected":
    the retry publishes at the cached position; the real server refuses it,
    naming the key's commit (proof of a conflict), and the read for the error
    is the old leader's. "ahead": a load of this process then cached the
    aggregate past `expected`, so the retry asks the leader before publishing
    (msg_get#1). "dropped": instead the first call met the old leader for the
    whole `deposed_leader_wait`, which drops the cached position, so the retry
    looks it up (direct_get#1), then asks the leader."""
    store = await frozen_behind(rig, "r")
    rig.faults.reset()
    if cache != "dropped":
        rig.faults.arm("publish", 1, 3, DROP_REPLY)
        rig.faults.arm("msg_get", 1, 1, LOSE)
    else:
        rig.faults.arm("publish", 1, MANY)
        for kind in ("msg_get", "direct_get", "stream_info"):
            rig.faults.arm(kind, 1, MANY)
    got = await call(rig, store, "r", "k1")
    assert isinstance(got, StoreTimeout), got
    assert await reasons(rig, "r") == ["before-0", "before-1", "acked", "cmd"]
    if cache == "ahead":
        assert (await store.load("r")).next_sequence == 4
    rig.faults.reset()
    if cache != "at_expected":
        rig.faults.arm("publish", 1, MANY)
    for kind in ("msg_get", "direct_get", "stream_info"):
        rig.faults.arm(kind, 1, STALE_READS)
    again = await call(rig, store, "r", "k1")
    assert isinstance(again, AppendResult), (again, trace(rig))
    assert (again.first_sequence, again.next_sequence, again.duplicate) == (3, 4, True)
    assert again.stream_sequence == 4
    assert ("publish#1" in trace(rig)) == (cache == "at_expected")
    assert await reasons(rig, "r") == ["before-0", "before-1", "acked", "cmd"]


@pytest.mark.parametrize("rig", [QUICK], indirect=True, ids=["wait0.2"])
async def test_a_keyed_append_whose_expected_is_ahead_of_the_aggregate(rig: Rig) -> None:
    """No deposed leader this time: `expected` is ahead of the aggregate.
    While one may answer, the leader's reads cannot tell this from the test
    above, so a keyed call re-reads for `deposed_leader_wait` (the time a
    deposed leader is given to stop answering), then it is a conflict, as
    without a key at once and in the in-memory store. An edition deleted under this process's cached
    position is proven empty by one STREAM.INFO: a conflict at once."""
    store = rig.client.store("player")
    for i in range(3):
        await store.append("r", [tagged(f"ours-{i}")], expected=i)
    rig.faults.reset()
    rig.faults.paused = False
    with pytest.raises(ConcurrencyError) as conflict:
        await store.append("r", [tagged("cmd")], expected=5)
    assert (conflict.value.expected, conflict.value.actual) == (5, 3)
    assert trace(rig) == ["msg_get#1"]
    rig.faults.reset()
    with pytest.raises(ConcurrencyError) as conflict:
        await store.append("r", [tagged("cmd")], expected=5, idempotency_key="k")
    assert (conflict.value.expected, conflict.value.actual) == (5, 3)
    assert trace(rig)[:2] == ["msg_get#1", "msg_get#2"]
    assert "publish#1" not in trace(rig)
    what_if = rig.client.store("player", edition="what-if")
    await what_if.append("r", [tagged("old")], expected=0)
    await rig.other.delete_edition("what-if")
    rig.faults.reset()
    with pytest.raises(ConcurrencyError) as conflict:
        await what_if.append("r", [tagged("cmd")], expected=2, idempotency_key="k")
    rig.faults.paused = True
    assert (conflict.value.expected, conflict.value.actual) == (2, 0)
    assert trace(rig)[:2] == ["msg_get#1", "stream_info#1"]
    assert await reasons(rig, "r") == ["ours-0", "ours-1", "ours-2"]
    assert await reasons(rig, "r", "what-if") == []


@pytest.mark.parametrize("key", KEYS, ids=["unkeyed", "keyed"])
async def test_an_aggregate_the_deposed_leader_never_saw(rig: Rig, key: str) -> None:
    """Its copy has no message on the subject: the refusal names sequence 0,
    as for a deleted edition; the STREAM.INFO that tells them apart is
    answered from the old copy too (behind the commit this process saw), so
    it proves nothing, and the new leader decides once the old one stepped down."""
    store = rig.client.store("player")
    await rig.faults.freeze(rig.stream, store.subject("r"))
    for i in range(3):
        await store.append("r", [tagged(f"after-{i}")], expected=i)
    rig.faults.reset()
    rig.faults.arm("publish", 1, 1)
    for kind in ("msg_get", "direct_get", "stream_info"):
        rig.faults.arm(kind, 1, 2)
    got = await call(rig, store, "r", key)
    assert isinstance(got, AppendResult), got
    assert (got.first_sequence, got.duplicate) == (3, False)
    assert "stream_info#1" in trace(rig)
    assert await reasons(rig, "r") == ["after-0", "after-1", "after-2", "cmd"]


@pytest.mark.parametrize("refusal", [STALE, CONFLICTED])
async def test_a_genuine_conflict_costs_no_request_more(rig: Rig, refusal: str) -> None:
    """A rival's commit holds the slot: a 10071 from the real leader names
    it (proof enough); a 10164 is followed by the read every conflict makes,
    whose last commit is the rival's, in the slot. Either way: one read."""
    store = rig.client.store("player")
    for i in range(3):
        await store.append("r", [tagged(f"ours-{i}")], expected=i)
    await rig.other.store("player").append("r", [tagged("rival")], expected=3)
    rig.faults.reset()
    if refusal == CONFLICTED:
        rig.faults.arm("publish", 1, 1, CONFLICTED)
    got = await call(rig, store, "r", "")
    assert isinstance(got, ConcurrencyError), got
    assert (got.expected, got.actual) == (3, 4)
    assert trace(rig) == ["publish#1", "msg_get#1"]
    assert await reasons(rig, "r") == ["ours-0", "ours-1", "ours-2", "rival"]


@pytest.mark.parametrize("key", KEYS, ids=["unkeyed", "keyed"])
@pytest.mark.parametrize("expected", [ANY, 1], ids=["ANY", "1"])
async def test_an_edition_another_process_deleted_is_no_doubt(
    rig: Rig, key: str, expected: ExpectedVersion
) -> None:
    """The real leader refuses the cached position with 10071 naming 0, as a
    deposed leader that never saw the aggregate would; one STREAM.INFO from a
    server that has the stream up to the cached commit shows the subject
    empty: deleted. Appended at once (ANY) or refused at once."""
    store = rig.client.store("player", edition="what-if")
    await store.append("r", [tagged("old")], expected=0)
    await rig.other.delete_edition("what-if")
    rig.faults.reset()
    rig.faults.paused = False
    try:
        got: object = await store.append(
            "r", [tagged("cmd")], expected=expected, idempotency_key=key
        )
    except ConcurrencyError as exc:
        got = exc
    finally:
        rig.faults.paused = True
    if expected is ANY:
        assert isinstance(got, AppendResult), got
        assert await reasons(rig, "r", "what-if") == ["cmd"]
    else:
        assert isinstance(got, ConcurrencyError), got
        assert await reasons(rig, "r", "what-if") == []
    assert trace(rig)[:3] == ["publish#1", "msg_get#1", "stream_info#1"]


@pytest.mark.parametrize("rig", [QUICK], indirect=True, ids=["wait0.2"])
async def test_a_stream_made_anew_costs_one_unknown_outcome(rig: Rig) -> None:
    """Deleted and provisioned again under a client: its cached position names
    a stream sequence the new stream has not reached, so the new leader's
    refusals look like a deposed leader's until the bound
    (`deposed_leader_wait`); then StoreTimeout, the cached position dropped,
    and the next call lands."""
    store = rig.client.store("player")
    for i in range(3):
        await store.append("r", [tagged(f"old-{i}")], expected=i)
    await jsadmin.delete_stream(rig.other, rig.stream)
    await rig.other.provision()
    await rig.other.store("player").append("r", [tagged("new")], expected=0)
    with pytest.raises(StoreTimeout, match="retry with the same idempotency key"):
        await store.append("r", [tagged("cmd")], expected=ANY, idempotency_key="k")
    got = await store.append("r", [tagged("cmd")], expected=ANY, idempotency_key="k")
    assert (got.first_sequence, got.duplicate) == (1, False)
    assert await reasons(rig, "r") == ["new", "cmd"]
