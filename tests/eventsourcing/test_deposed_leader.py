"""A deposed stream leader's refusal never turns a stored insert into an
`IntegrityError` (the recorders' conflict).

In a cluster, a stream leader paused while the others elected a new one
still answers for a moment after it resumes: a publish is stored by the new
leader all the same, but the old one refuses it at once, 10071 naming the
last sequence of its stale copy (or 10164 for a proposal it left in flight),
and its answer, needing no raft round trip, comes first. The store was fixed
for this (tests/faults/test_deposed_leader.py); these are the same faults on
an eventsourcing factory's connection (tests/support/wirefaults.py: STALE,
STALE_IN_PROCESS), on one server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import pytest
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.utils import Environment

import angzarr_es
from angzarr_es.eventsourcing import Factory
from angzarr_es.testing import faults as wire
from tests.eventsourcing.support import environment
from tests.support import jsadmin
from tests.support.configs import fresh_config
from tests.support.wirefaults import CONFLICTED, STALE, STALE_IN_PROCESS, WireFaults

pytestmark = pytest.mark.timeout(120)

MANY = 400
"""Requests of one kind a deposed leader answers when it never steps down."""
QUICK = 0.2
"""NATS_DEPOSED_LEADER_WAIT (seconds) where a test waits it out."""
READS = ("msg_get", "direct_get", "stream_info")


@dataclass
class Rig:
    recorder: ApplicationRecorder
    rival: ApplicationRecorder
    """The same application's recorder on a connection of its own."""
    faults: WireFaults
    stream: str

    def subject(self, originator: uuid.UUID) -> str:
        """Where the recorder stores `originator`'s events (docs/eventsourcing.md)."""
        return f"{self.stream}.app.events.{originator}"

    async def insert(self, events: Sequence[StoredEvent]) -> object:
        """The recorder's insert, under the armed faults: its ids, or what it raised."""
        self.faults.paused = False
        try:
            return await asyncio.to_thread(self.recorder.insert_events, list(events))
        except (IntegrityError, OperationalError) as exc:
            return exc
        finally:
            self.faults.paused = True

    async def versions(self, originator: uuid.UUID) -> list[int]:
        stored = await asyncio.to_thread(self.rival.select_events, originator)
        return [e.originator_version for e in stored]


@pytest.fixture
async def rig(nats_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    """The recorder under test, with its factory's connection under `faults`,
    and a rival; NATS_DEPOSED_LEADER_WAIT is the default (2 s) unless the test
    parametrizes `rig` indirectly with another."""
    extra = {"NATS_REQUEST_TIMEOUT": "1"}
    if hasattr(request, "param"):
        extra["NATS_DEPOSED_LEADER_WAIT"] = str(request.param)
    settings = environment(nats_url, **extra)
    stream = settings["ANGZARR_ES_STREAM"]
    factory = Factory(Environment("app", settings))
    other = Factory(Environment("app", settings))
    admin = await angzarr_es.connect(config=fresh_config(nats_url))
    try:
        recorder = factory.application_recorder()
        faults = WireFaults(admin, on=wire.TapPoint(factory.datastore.wire), prefix=f"{stream}.app")
        faults.paused = True
        yield Rig(recorder, other.application_recorder(), faults, stream)
        faults.restore()
    finally:
        factory.close()
        other.close()
        await jsadmin.delete_stream(admin, stream)
        await admin.close()


def event(originator: uuid.UUID, version: int) -> StoredEvent:
    return StoredEvent(originator, version, "topic", f"state {version}".encode())


async def frozen_behind(rig: Rig, originator: uuid.UUID) -> None:
    """Two events, the old leader's copy taken, a third acknowledged (by the
    new leader): the recorder has that third one's position cached."""
    for version in (1, 2):
        await asyncio.to_thread(rig.recorder.insert_events, [event(originator, version)])
    await rig.faults.freeze(rig.stream, rig.subject(originator))
    await asyncio.to_thread(rig.recorder.insert_events, [event(originator, 3)])
    rig.faults.reset()


REFUSALS = [STALE, STALE_IN_PROCESS]


@pytest.mark.parametrize("refusal", REFUSALS)
async def test_a_stored_insert_a_deposed_leader_refuses_is_found_in_the_leaders_read(
    rig: Rig, refusal: str
) -> None:
    """Only the publish is answered by the old leader; the read after it, by
    the new one, shows our event in the slot: the insert's id, in one read."""
    a = uuid.uuid4()
    await frozen_behind(rig, a)
    rig.faults.arm("publish", 1, 1, refusal)
    got = await rig.insert([event(a, 4)])
    assert isinstance(got, list), got
    assert await rig.versions(a) == [1, 2, 3, 4]
    assert rig.faults.numbered() == ["publish#1", "msg_get#1"]


@pytest.mark.parametrize("refusal", REFUSALS)
async def test_a_batch_a_deposed_leader_refuses_is_found_too(rig: Rig, refusal: str) -> None:
    """An atomic batch across two aggregates: stored whole, its ids returned."""
    a, b = uuid.uuid4(), uuid.uuid4()
    await frozen_behind(rig, a)
    rig.faults.arm("publish", 1, 1, refusal)
    got = await rig.insert([event(a, 4), event(b, 1)])
    assert isinstance(got, list), got
    assert len(got) == 2
    assert got[1] == got[0] + 1
    assert await rig.versions(a) == [1, 2, 3, 4]
    assert await rig.versions(b) == [1]


@pytest.mark.parametrize("refusal", REFUSALS)
async def test_a_deposed_leader_answering_publish_and_reads_then_stepping_down(
    rig: Rig, refusal: str
) -> None:
    """The old leader answers the publish and the reads after it (its copy
    lacks the event this process saw acknowledged: its "nothing there" proves
    nothing), then steps down: the insert is sent again (same id), and the new
    leader's answer decides."""
    a = uuid.uuid4()
    await frozen_behind(rig, a)
    rig.faults.arm("publish", 1, 2, refusal)
    for kind in READS:
        rig.faults.arm(kind, 1, 4)
    got = await rig.insert([event(a, 4)])
    assert isinstance(got, list), got
    assert await rig.versions(a) == [1, 2, 3, 4]
    assert "publish#3" in rig.faults.numbered()


@pytest.mark.parametrize("rig", [QUICK], indirect=True, ids=["wait0.2"])
@pytest.mark.parametrize("refusal", REFUSALS)
async def test_a_deposed_leader_that_never_steps_down_makes_the_outcome_unknown(
    rig: Rig, refusal: str
) -> None:
    """Every request answered by the old leader while the insert lasts: an
    OperationalError (outcome unknown) once NATS_DEPOSED_LEADER_WAIT has
    passed, never an IntegrityError."""
    a = uuid.uuid4()
    await frozen_behind(rig, a)
    rig.faults.arm("publish", 1, MANY, refusal)
    for kind in READS:
        rig.faults.arm(kind, 1, MANY)
    got = await rig.insert([event(a, 4)])
    assert isinstance(got, OperationalError), got
    assert f"refused for {QUICK:g}s (NATS_DEPOSED_LEADER_WAIT)" in str(got)
    assert await rig.versions(a) == [1, 2, 3, 4]


@pytest.mark.parametrize("refusal", [STALE, CONFLICTED])
async def test_a_genuine_conflict_is_still_an_integrity_error(rig: Rig, refusal: str) -> None:
    """A rival's event holds the slot: the real leader's 10071 names it (proof
    enough, one read for the error); a 10164 is decided by the read of the slot."""
    a = uuid.uuid4()
    for version in (1, 2, 3):
        await asyncio.to_thread(rig.recorder.insert_events, [event(a, version)])
    await asyncio.to_thread(rig.rival.insert_events, [event(a, 4)])
    rig.faults.reset()
    if refusal == CONFLICTED:
        rig.faults.arm("publish", 1, 1, CONFLICTED)
    got = await rig.insert([event(a, 4)])
    assert isinstance(got, IntegrityError), got
    assert await rig.versions(a) == [1, 2, 3, 4]
    if refusal == STALE:
        assert rig.faults.numbered() == ["publish#1", "msg_get#1"]


async def test_a_genuine_conflict_on_a_later_subject_of_a_batch(rig: Rig) -> None:
    """The refusal names the rival's sequence on the batch's second subject,
    which is before the first subject's expected one, so it proves nothing by
    itself: the read of that subject's slot finds the rival's event (not the
    batch's), and the insert is refused without being sent again (not
    re-checked until NATS_DEPOSED_LEADER_WAIT)."""
    a, b = uuid.uuid4(), uuid.uuid4()
    await asyncio.to_thread(rig.recorder.insert_events, [event(b, 1)])
    await asyncio.to_thread(rig.rival.insert_events, [event(b, 2)])
    for version in (1, 2, 3):
        await asyncio.to_thread(rig.recorder.insert_events, [event(a, version)])
    rig.faults.reset()
    got = await rig.insert([event(a, 4), event(b, 2)])
    assert isinstance(got, IntegrityError), got
    assert [kind for kind, _ in rig.faults.trace].count("publish") == 1
    assert await rig.versions(a) == [1, 2, 3]
    assert await rig.versions(b) == [1, 2]
