"""Appends and conflicts: one event or ten per call, with the aggregate's
position cached, looked up or new, and an append that is refused as stale."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence

from google.protobuf.message import Message

from angzarr_es import ConcurrencyError
from angzarr_es.pb import player_pb2
from angzarr_es.store import EventStore
from benchmarks import peers
from benchmarks.commits import commit, event
from benchmarks.contenders import CODEC, FLOOR, NAIVE, OURS, OURS_HOT, OURS_ONE, WIRE
from benchmarks.context import DOMAIN, Run, sync
from benchmarks.harness import Case, Op
from benchmarks.wire import WireClient


def _append_cases(run: Run, count: int) -> list[Case]:
    """Append `count` events per call to an aggregate whose position is known."""
    store = run.store
    events = [event(i) for i in range(count)]
    cases: list[Case] = []

    cases.append(Case(OURS, cached_appender(store, events)))
    # The same with the hot-aggregate cache on: each append also extends the
    # aggregate's cached history from the payload it sent.
    cases.append(Case(OURS_HOT, cached_appender(run.hot.store(DOMAIN), events)))

    floor_subject = store.subject(uuid.uuid4())
    floor_payload = commit(DOMAIN, b"floor", 0, events)
    floor_last = [0]

    async def floor(_: int) -> object:
        ack = await run.raw.request_append(floor_subject, floor_payload, floor_last[0])
        floor_last[0] = ack.seq
        return ack

    cases.append(Case(FLOOR, floor))

    if run.wire is not None:
        cases.append(
            Case(WIRE, _wire_appender(run.wire, store.subject(uuid.uuid4()), floor_payload))
        )

    naive_subject = store.subject(uuid.uuid4())
    naive_state = [0, 0]  # next sequence, last stream sequence

    async def naive(_: int) -> object:
        payload = commit(DOMAIN, b"naive", naive_state[0], events)
        naive_state[1] = await run.raw.naive_append(naive_subject, payload, naive_state[1])
        naive_state[0] += count
        return None

    cases.append(Case(NAIVE, naive))

    for recorder in run.recorders:
        cases.append(Case(recorder.name, sync(_recorder_appender(recorder, events))))

    codec_next = [0]

    def codec_append(_: int) -> object:
        run.codec_only.append("codec-append", codec_next[0], events)
        codec_next[0] += count
        return None

    cases.append(Case(CODEC, sync(codec_append)))
    return cases


def cached_appender(store: EventStore, events: Sequence[Message]) -> Op:
    """Appends of `events` to a new aggregate of `store`, each expecting the
    position the last one returned (cached, so no lookup)."""
    root = uuid.uuid4()
    position = [0]

    async def append(_: int) -> object:
        result = await store.append(root, events, expected=position[0])
        position[0] = result.next_sequence
        return result

    return append


def _wire_appender(
    wire: WireClient, subject: str, payload: bytes
) -> Callable[[int], Awaitable[object]]:
    last = [0]

    async def append(_: int) -> object:
        last[0] = await wire.append(subject, payload, last[0])
        return None

    return append


def _recorder_appender(
    recorder: peers.Recorder, events: list[player_pb2.FundsDeposited]
) -> Callable[[int], object]:
    root = uuid.uuid4()
    state = [0]

    def append(_: int) -> object:
        recorder.append(root, state[0], events)
        state[0] += len(events)
        return None

    return append


async def bench_appends(run: Run) -> None:
    s = run.sizes
    print("appends", flush=True)
    await run.timed("append 1 event (cached)", _append_cases(run, 1), s.samples)
    # Ours with one event per call again, interleaved with the 10-event
    # appends, so their ratio does not depend on when the machine was busy.
    ten = _append_cases(run, 10)
    one = _append_cases(run, 1)[0]
    ten.insert(1, Case(OURS_ONE, one.run))
    await run.timed("append 10 events (cached)", ten, s.samples // 2, 10)

    # Without a prior load: this process has no cached position for the
    # aggregate, as in a stateless command handler that was handed `expected`.
    store = run.store
    root = uuid.uuid4()
    await store.append(root, [event(i) for i in range(10)], expected=0)
    state = [10]

    async def forget(_: int) -> object:
        store._ctx.cache.clear()
        return None

    async def ours(_: int) -> object:
        result = await store.append(root, [event()], expected=state[0])
        state[0] = result.next_sequence
        return result

    floor_subject = store.subject(uuid.uuid4())
    payload = commit(DOMAIN, b"floor", 0, [event()])
    await run.raw.request_append(floor_subject, payload, 0)

    async def floor(_: int) -> object:
        return await run.raw.lookup_then_append(floor_subject, payload)

    await run.timed(
        "append 1 event (lookup, existing)",
        [Case(OURS, ours, prepare=forget), Case(FLOOR, floor)],
        s.samples // 2,
    )

    async def ours_new(_: int) -> object:
        return await store.append(uuid.uuid4(), [event()], expected=0)

    async def floor_new(_: int) -> object:
        return await run.raw.request_append(store.subject(uuid.uuid4()), payload, 0)

    new_cases = [Case(OURS, ours_new, prepare=forget), Case(FLOOR, floor_new)]
    for recorder in run.recorders:

        def rec_new(_: int, recorder: peers.Recorder = recorder) -> object:
            recorder.append(uuid.uuid4(), 0, [event()])
            return None

        new_cases.append(Case(recorder.name, sync(rec_new)))
    await run.timed("append 1 event (new aggregate)", new_cases, s.samples // 2)


async def bench_conflicts(run: Run) -> None:
    print("conflicts", flush=True)
    s = run.sizes
    store = run.store
    rival = run.rival.store(DOMAIN)
    root = uuid.uuid4()
    await store.append(root, [event()], expected=0)
    mine = [1]
    theirs = [1]
    await store.load(root)

    async def rival_writes(_: int) -> object:
        result = await rival.append(root, [event()], expected=theirs[0])
        theirs[0] = result.next_sequence
        return result

    async def ours(_: int) -> object:
        try:
            await store.append(root, [event()], expected=mine[0])
        except ConcurrencyError as exc:
            mine[0] = exc.actual
            return exc
        raise RuntimeError("a stale append was accepted")

    local_root = uuid.uuid4()
    await store.append(local_root, [event(), event()], expected=0)

    async def ours_local(_: int) -> object:
        try:
            await store.append(local_root, [event()], expected=1)
        except ConcurrencyError as exc:
            return exc
        raise RuntimeError("a stale append was accepted")

    floor_subject = store.subject(uuid.uuid4())
    payload = commit(DOMAIN, b"floor", 0, [event()])
    ack = await run.raw.request_append(floor_subject, payload, 0)
    await run.raw.request_append(floor_subject, payload, ack.seq)

    async def floor(_: int) -> object:
        ack = await run.raw.request_append(floor_subject, payload, 1)
        if ack.error is None:
            raise RuntimeError("the server accepted a stale append")
        return ack

    cases = [
        Case(OURS, ours, prepare=rival_writes),
        Case(FLOOR, floor),
        Case(OURS + " (stale locally)", ours_local),
    ]
    for recorder in run.recorders:
        rec_root = uuid.uuid4()
        recorder.append(rec_root, 0, [event()])

        def rec_conflict(
            _: int, recorder: peers.Recorder = recorder, rec_root: uuid.UUID = rec_root
        ) -> object:
            if not recorder.conflicts(rec_root, 0, event()):
                raise RuntimeError(f"{recorder.name} accepted a duplicate version")
            return None

        cases.append(Case(recorder.name, sync(rec_conflict)))
    await run.timed("conflict (stale expected)", cases, s.samples // 4)
