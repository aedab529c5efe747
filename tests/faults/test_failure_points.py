"""Every failure point of the write path says the truth about what was stored.

A failure is injected at each request a write makes (tests/support/wirefaults.py:
every publish, every read after a publish, every retry), against a real
server; then what the call reported is checked against what the stream holds:

    nothing stored   StoreUnavailable, PermissionDenied, another StoreError,
                     ConcurrencyError (and, before sending, CodecError)
    unknown          StoreTimeout: stored once or not at all
    stored           a result (with `.duplicate`: an earlier call's commit)

The exploration starts from the requests of a fault-free call, fails each of
them in every way that applies, and then, up to DEPTH faults, the requests
each failure adds (a retry, a read looking for the commit, ...). The table in
docs/reliability.md ("Failure points of the write path") lists the points and
what each reports; `test_the_table_names_every_point` keeps it in step.
"""

from __future__ import annotations

import collections
import itertools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import angzarr_es
from angzarr_es import ANY, AppendResult
from angzarr_es.errors import AngzarrESError
from angzarr_es.pb import player_pb2
from tests.support import jsadmin
from tests.support.configs import fresh_config
from tests.support.loadgen import _leader_load, tagged
from tests.support.wirefaults import (
    DROP_REPLY,
    LOSE,
    MODES,
    NO_RESPONDERS,
    REFUSED,
    UNAVAILABLE,
    Fault,
    WireFaults,
)

pytestmark = pytest.mark.timeout(300)

DEPTH = 3
"""Faults per call at most: a lost ack, its retry's, and the check after them."""
ATTEMPTS = 2
"""append_attempts for these clients: each retry is a point, so fewer keep the tree small."""
# A read whose reply is dropped is a read that was lost: one of the two is enough.
MODES_OF = {
    "publish": MODES,
    "entry": MODES,
    "snapshot": MODES,
    "purge": (DROP_REPLY, LOSE, NO_RESPONDERS, UNAVAILABLE, REFUSED),
    "direct_get": (LOSE, NO_RESPONDERS, UNAVAILABLE, REFUSED),
    "msg_get": (LOSE, NO_RESPONDERS, UNAVAILABLE, REFUSED),
}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"


@dataclass
class Rig:
    """The client under test (its wire faults armed per call) and another one
    (for what other processes write first, and for the checks)."""

    client: angzarr_es.Client
    other: angzarr_es.Client
    faults: WireFaults
    ours: angzarr_es.EventStore
    theirs: angzarr_es.EventStore


@pytest.fixture
async def rig(nats_url: str) -> AsyncIterator[Rig]:
    config = fresh_config(nats_url, request_timeout=1.0, append_attempts=ATTEMPTS)
    async with (
        await angzarr_es.connect(config=config) as client,
        await angzarr_es.connect(config=config) as other,
    ):
        await client.provision()
        faults = WireFaults(client)
        faults.paused = True  # until `attempt` arms it
        yield Rig(client, other, faults, client.store("player"), other.store("player"))
        await jsadmin.delete_stream(client, config.nats.stream_name)
        await jsadmin.delete_stream(client, config.nats.snapshot_stream)


# -- one call, its outcome, and the exploration ------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one call reported, and the requests it made."""

    faults: tuple[Fault, ...]
    trace: tuple[str, ...]  # "kind#n" of every request
    reported: str  # "stored", "duplicate", "nothing" or the exception's class name
    result: object


def _points(trace: list[tuple[str, str]]) -> list[tuple[str, int]]:
    seen: collections.Counter[str] = collections.Counter()
    points = []
    for kind, _ in trace:
        seen[kind] += 1
        points.append((kind, seen[kind]))
    return points


async def explore(
    faults: WireFaults,
    call: Callable[[int, tuple[Fault, ...]], Awaitable[Outcome]],
) -> list[Outcome]:
    """Run `call` fault-free, then with a fault at each point its requests
    reach, then at the points each failure adds, up to DEPTH faults."""
    outcomes = []
    run = itertools.count()
    todo: list[tuple[Fault, ...]] = [()]
    while todo:
        chosen = todo.pop()
        outcome = await call(next(run), chosen)
        outcomes.append(outcome)
        if len(chosen) >= DEPTH:
            continue
        # Points this call reached that its parent did not: the baseline's
        # all, then only the requests a failure added.
        done = {(f.kind, f.nth) for f in chosen}
        reached = [(k, int(n)) for k, n in (t.split("#") for t in outcome.trace)]
        if chosen:
            last = chosen[-1]
            reached = reached[reached.index((last.kind, last.nth)) + 1 :]
        for kind, nth in reached:
            if (kind, nth) in done or kind not in MODES_OF:
                continue
            for mode in MODES_OF[kind]:
                todo.append((*chosen, Fault(kind, nth, mode)))
    return outcomes


async def attempt(
    faults: WireFaults, chosen: tuple[Fault, ...], op: Awaitable[object]
) -> tuple[str, object, tuple[str, ...]]:
    """Await `op` with `chosen` armed: (reported, result or error, trace)."""
    faults.reset(*chosen)
    faults.paused = False
    value: object
    try:
        result = await op
    except AngzarrESError as exc:
        reported, value = type(exc).__name__, exc
    else:
        if isinstance(result, AppendResult):
            reported = "duplicate" if result.duplicate else "stored"
        else:
            reported = "stored"
        value = result
    finally:
        faults.paused = True
    trace = tuple(f"{k}#{n}" for k, n in _points(faults.trace))
    return reported, value, trace


def truthful(reported: str, copies: int, sent: bool, writes: bool = True) -> bool:
    """Whether `reported` is the truth for a call whose commit the stream holds
    `copies` times, after it `sent` the write (or not), when it `writes` at all."""
    if reported == "stored":
        return copies == int(writes)
    if reported == "StoreTimeout":
        return copies <= 1 and sent  # unknown only once something may have been stored
    return copies == 0  # duplicate, and every "nothing stored" error


def sent(trace: tuple[str, ...], kind: str) -> bool:
    """Whether the call sent a request of `kind` (each may have been stored)."""
    return any(t.startswith(kind + "#") for t in trace)


def summary(outcomes: list[Outcome]) -> dict[str, collections.Counter[str]]:
    """Per failure point (the last fault of a run): what the calls reported."""
    table: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for o in outcomes:
        key = f"{o.faults[-1].kind}#{o.faults[-1].nth}" if o.faults else "-"
        table[key][o.reported] += 1
    return dict(table)


# -- append ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One shape of append: what is in place before the call, and the call."""

    name: str
    expected: int | None  # None: ANY; the value otherwise (may be stale on purpose)
    prior_ours: int = 0  # commits appended through the client under test (it caches them)
    prior_theirs: int = 0  # then commits by another client (our cache goes stale)
    key: str = ""  # the call's idempotency key
    prior_key: bool = False  # the first prior commit was stored under the same key
    correlated: bool = False
    empty: bool = False


SCENARIOS = [
    Scenario("new aggregate", expected=0),
    Scenario("cached position", expected=1, prior_ours=1),
    Scenario("position looked up", expected=1, prior_theirs=1),
    Scenario("stale cache, right expected", expected=2, prior_ours=1, prior_theirs=1),
    Scenario("stale cache, conflict", expected=1, prior_ours=1, prior_theirs=1),
    Scenario("ANY losing a race", expected=None, prior_ours=1, prior_theirs=1),
    Scenario("keyed", expected=0, key="k"),
    Scenario("keyed repeat, ANY", expected=None, prior_theirs=1, key="k", prior_key=True),
    Scenario("keyed repeat, stale expected", expected=0, prior_theirs=2, key="k", prior_key=True),
    Scenario("correlated", expected=0, correlated=True),
    Scenario("correlated, looked up", expected=1, prior_theirs=1, correlated=True),
    Scenario("no events", expected=1, prior_theirs=1, empty=True),
    Scenario("no events, stale expected", expected=0, prior_theirs=1, empty=True),
]


async def _reasons(store: angzarr_es.EventStore, root: str) -> list[str]:
    """The aggregate's event reasons as the stream leader has them."""
    hist = await _leader_load(store, root)
    return [e.event.reason for e in hist.events]  # type: ignore[attr-defined]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
async def test_append_reports_what_the_stream_holds_at_every_failure_point(
    rig: Rig, scenario: Scenario
) -> None:
    faults, ours, theirs, other = rig.faults, rig.ours, rig.theirs, rig.other
    wrong: list[str] = []

    async def call(n: int, chosen: tuple[Fault, ...]) -> Outcome:
        root, tag = f"fp-{n}", f"call-{n}"
        prior = 0
        for i in range(scenario.prior_ours):
            await ours.append(root, [tagged(f"ours-{i}")], expected=prior)
            prior += 1
        for i in range(scenario.prior_theirs):
            key = scenario.key if scenario.prior_key and i == 0 else ""
            await theirs.append(root, [tagged(f"theirs-{i}")], expected=prior, idempotency_key=key)
            prior += 1
        cid = f"cid-{n}" if scenario.correlated else ""
        events = [] if scenario.empty else [tagged(tag)]
        expected = ANY if scenario.expected is None else scenario.expected
        reported, value, trace = await attempt(
            faults,
            chosen,
            ours.append(
                root, events, expected=expected, correlation_id=cid, idempotency_key=scenario.key
            ),
        )
        stored = await _reasons(theirs, root)
        copies = stored.count(tag)
        where = f"{scenario.name}, faults {chosen}: reported {reported} ({value!r})"
        # A keyed call asks whether the key's command is stored: unknown even
        # when the key's commit is looked for without publishing.
        maybe = sent(trace, "publish") or bool(scenario.key)
        if not truthful(reported, copies, maybe, writes=not scenario.empty):
            wrong.append(f"{where}, but the stream holds the commit {copies} times: {stored}")
        if isinstance(value, AppendResult) and not scenario.empty:
            span = stored[value.first_sequence : value.next_sequence]
            want = ["theirs-0"] if value.duplicate else [tag]
            if span != want:
                wrong.append(f"{where}, but its span holds {span}")
        if scenario.correlated:
            found = await other.events_by_correlation(cid)
            indexed = [e.event.reason for evs in found.values() for e in evs]  # type: ignore[attr-defined]
            if indexed != [tag] * copies:
                wrong.append(f"{where}: the index gives {indexed}, the stream {copies} copies")
        if scenario.key:
            # Whatever was reported, a retry with the key stores the command once.
            again = await ours.append(root, events, expected=ANY, idempotency_key=scenario.key)
            after = await _reasons(theirs, root)
            keyed = after.count(tag) + after.count("theirs-0") * scenario.prior_key
            if keyed != 1 or (copies and not again.duplicate):
                wrong.append(f"{where}; the retry with the key gave {again}, stream {after}")
        return Outcome(chosen, trace, reported, value)

    outcomes = await explore(faults, call)
    table = summary(outcomes)
    print(f"\n{scenario.name}: {len(outcomes)} calls; by last failure point:")
    for point, counts in sorted(table.items()):
        print(f"  {point:14} {dict(counts)}")
    assert not wrong, "\n".join(wrong[:20]) + f"\n({len(wrong)} in all)"
    assert len(outcomes) > 1


# -- save_snapshot -------------------------------------------------------------------------


async def test_save_snapshot_reports_what_the_stream_holds_at_every_failure_point(
    rig: Rig,
) -> None:
    faults, ours, theirs = rig.faults, rig.ours, rig.theirs
    wrong: list[str] = []

    async def call(n: int, chosen: tuple[Fault, ...]) -> Outcome:
        root = f"snap-{n}"
        await theirs.append(root, [tagged("a"), tagged("b")], expected=0)
        state = player_pb2.PlayerState(balance_cents=n + 1)
        reported, value, trace = await attempt(
            faults, chosen, ours.save_snapshot(root, state, sequence=1)
        )
        snap = (await theirs.load(root, snapshot=True)).snapshot
        copies = int(snap is not None and snap.state == state)
        if not truthful(reported, copies, sent(trace, "snapshot")):
            wrong.append(f"faults {chosen}: reported {reported} ({value!r}); stored {copies}")
        return Outcome(chosen, trace, reported, value)

    outcomes = await explore(faults, call)
    print(f"\nsave_snapshot: {len(outcomes)} calls; {summary(outcomes)}")
    assert not wrong, "\n".join(wrong[:20])


# -- delete_edition --------------------------------------------------------------------------


async def test_delete_edition_reports_what_the_stream_holds_at_every_failure_point(
    rig: Rig,
) -> None:
    """Deleting is the write whose "stored" is "gone": a result means the
    edition's events and snapshots are gone; StoreTimeout, that anything may
    be; any other error, that its events are all still there (its snapshots go
    first, so they may be gone). A retry then deletes what is left."""
    client, other, faults = rig.client, rig.other, rig.faults
    wrong: list[str] = []

    async def call(n: int, chosen: tuple[Fault, ...]) -> Outcome:
        edition = f"ed{n}"
        theirs = other.store("player", edition=edition)
        await theirs.append("x", [tagged("a")], expected=0)
        await theirs.save_snapshot("x", player_pb2.PlayerState(balance_cents=1), 0)
        reported, value, trace = await attempt(faults, chosen, client.delete_edition(edition))
        events = len((await theirs.load("x")).events)
        snapshot = (await theirs.load("x", snapshot=True)).snapshot
        where = f"faults {chosen}: reported {reported} ({value!r})"
        if reported == "stored" and (events or snapshot):
            wrong.append(f"{where}, but the edition still has {events} events, {snapshot}")
        if reported not in ("stored", "StoreTimeout") and not events:
            wrong.append(f"{where}, but its events are gone")
        await client.delete_edition(edition)
        left = await theirs.load("x")
        if left.events or (await theirs.load("x", snapshot=True)).snapshot:
            wrong.append(f"{where}; a retry left {left}")
        # This process's positions are not stale either way.
        again = await client.store("player", edition=edition).append(
            "x", [tagged("new")], expected=0
        )
        if again.first_sequence != 0:
            wrong.append(f"{where}; an append after it landed at {again}")
        return Outcome(chosen, trace, reported, value)

    outcomes = await explore(faults, call)
    print(f"\ndelete_edition: {len(outcomes)} calls; {summary(outcomes)}")
    assert not wrong, "\n".join(wrong[:20])


# -- the documentation ------------------------------------------------------------------------


def test_the_table_names_every_point() -> None:
    """docs/reliability.md lists each failure point these tests inject at."""
    text = DOCS.read_text()
    section = text.split("## Failure points of the write path", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z_]+)#", section))
    assert {"publish", "entry", "snapshot", "purge", "direct_get", "msg_get"} <= named
