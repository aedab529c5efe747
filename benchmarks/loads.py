"""Loads: one aggregate of 10 to 10,000 events, in commits of 1 or 10, read whole."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from angzarr_es.store import EventStore
from benchmarks import peers
from benchmarks.commits import commit, event
from benchmarks.contenders import CODEC, FLOOR, FLOOR_DECODED, NAIVE, OURS, OURS_CONSUMER, WIRE
from benchmarks.context import DOMAIN, Run, sync
from benchmarks.harness import Case
from benchmarks.raw import RawClient
from benchmarks.wire import WireClient


async def fill(run: Run, root: uuid.UUID, total: int, per_commit: int) -> int:
    """Write `total` events to `root` in commits of `per_commit`, pipelined;
    returns the last commit's stream sequence, once every replica has it."""
    return await fill_subject(run.raw, run.store.subject(root), root, total, per_commit)


async def fill_subject(
    raw: RawClient, subject: str, root: uuid.UUID, total: int, per_commit: int
) -> int:
    """`fill` of `root`'s `subject` in `raw`'s stream."""
    payloads = [
        commit(
            DOMAIN,
            root.bytes,
            first,
            [event(i) for i in range(first, min(first + per_commit, total))],
        )
        for first in range(0, total, per_commit)
    ]
    last = await raw.bulk_fill(subject, payloads)
    await raw.replicated(subject, last)
    return last


async def bench_loads(run: Run) -> None:
    print("loads", flush=True)
    s = run.sizes
    for size in s.load_sizes:
        for per_commit in (1, 10):
            root = uuid.uuid4()
            await fill(run, root, size, per_commit)
            await run.timed(
                f"load {size} events ({per_commit}/commit)",
                await _load_cases(run, root, size, per_commit),
                s.load_samples[size],
                size,
            )
            await run.raw.delete_leftovers()


async def _load_cases(run: Run, root: uuid.UUID, size: int, per_commit: int) -> list[Case]:
    """Every contender's load of `root` (`size` events); the baselines that keep
    their own copy (the codec, the peers) are given the same events here."""
    subject = run.store.subject(root)
    cases = [
        Case(OURS, ours_loader(run.ours.store(DOMAIN), root, size)),
        Case(OURS_CONSUMER, ours_loader(run.ours_consumer.store(DOMAIN), root, size)),
    ]

    async def floor(_: int) -> object:
        books = await run.raw.direct_load(subject)
        got = sum(len(book.pages) for book in books)
        if got != size:
            raise RuntimeError(f"floor read {got} of {size} events")
        return books

    async def floor_decoded(_: int) -> object:
        events = await run.raw.direct_load(subject, decode=True)
        if len(events) != size:
            raise RuntimeError(f"floor read {len(events)} of {size} events")
        return events

    async def naive(_: int) -> object:
        return await run.raw.naive_load(subject, size)

    async def tidy(_: int) -> object:
        await run.raw.delete_leftovers()
        return None

    cases += [
        Case(FLOOR, floor),
        Case(FLOOR_DECODED, floor_decoded),
        Case(NAIVE, naive, prepare=tidy),
    ]
    if run.wire is not None:
        cases += await _wire_loader(run.wire, subject, size // per_commit)
    codec_root = f"load-{size}-{per_commit}"
    for first in range(0, size, per_commit):
        run.codec_only.append(
            codec_root, first, [event(i) for i in range(first, first + per_commit)]
        )

    def codec_load(_: int) -> object:
        events = run.codec_only.load(codec_root)
        if len(events) != size:
            raise RuntimeError("codec-only load lost events")
        return events

    cases.append(Case(CODEC, sync(codec_load)))
    # The peers store one row per event whatever the commit size: their load
    # is measured once, in the 1/commit rounds.
    if per_commit == 1:
        for recorder in run.recorders:
            cases.append(Case(recorder.name, sync(recorder_loader(recorder, size))))
    return cases


def recorder_loader(recorder: peers.Recorder, size: int) -> Callable[[int], object]:
    """A load of a new aggregate of `size` events stored by `recorder`."""
    root = uuid.uuid4()
    for first in range(0, size, 100):
        recorder.append(root, first, [event(i) for i in range(first, min(first + 100, size))])

    def load(_: int) -> object:
        events = recorder.load(root)
        if len(events) != size:
            raise RuntimeError(f"{recorder.name} lost events")
        return events

    return load


async def _wire_loader(wire: WireClient, subject: str, commits: int) -> list[Case]:
    """The socket-only load, if one batch holds the whole aggregate."""
    request = wire.load_request(subject, commits)
    got = await wire.check_load(request)
    if got != commits:
        print(f"  {WIRE}: one batch held {got} of {commits} commits; row left out")
        return []

    async def load(_: int) -> object:
        return await wire.load(request)

    return [Case(WIRE, load)]


def ours_loader(
    store: EventStore, root: uuid.UUID, size: int
) -> Callable[[int], Awaitable[object]]:
    async def load(_: int) -> object:
        history = await store.load(root)
        for recorded in history.events:
            recorded.event  # noqa: B018 - the caller reads every event
        if len(history.events) != size:
            raise RuntimeError(f"loaded {len(history.events)} of {size} events")
        return history

    return load
