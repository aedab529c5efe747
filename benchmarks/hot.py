"""Hot loads: an aggregate this process has read before, loaded again through
the hot-aggregate cache (one request whatever the history's length), beside
one raw request of the same read, and the peers' loads without and with
their own aggregate cache."""

from __future__ import annotations

import uuid

from benchmarks import peers
from benchmarks.contenders import FLOOR, OURS_HOT, WIRE
from benchmarks.context import DOMAIN, Run, sync
from benchmarks.harness import Case
from benchmarks.loads import fill, ours_loader, recorder_loader


def hot_op(size: int) -> str:
    return f"hot load {size} events (1/commit)"


async def bench_hot(run: Run) -> None:
    print("hot loads", flush=True)
    s = run.sizes
    for size in s.hot_sizes:
        root = uuid.uuid4()
        tail = await fill(run, root, size, 1)
        store = run.hot.store(DOMAIN)
        await store.load(root)  # read once: the aggregate is hot from now on
        for _ in range(20):  # on a cluster a replica may lag just after the fill
            hits = run.hot.cache_stats.hits
            await store.load(root)
            if run.hot.cache_stats.hits > hits:
                break
        else:
            raise RuntimeError(f"{root} never came from the cache: {run.hot.cache_stats}")
        subject = store.subject(root)

        async def floor(_: int, subject: str = subject, tail: int = tail) -> object:
            # The same single request the hot load sends: a batch Direct Get
            # from the last commit's stream sequence, its one payload parsed.
            books = await run.raw.direct_load(subject, start=tail)
            if len(books) != 1:
                raise RuntimeError(f"the request floor read {len(books)} commits, not 1")
            return books

        cases = [Case(OURS_HOT, ours_loader(store, root, size)), Case(FLOOR, floor)]
        if run.wire is not None:
            request = run.wire.load_request(subject, 1000, tail)
            if await run.wire.check_load(request) == 1:

                async def bare(_: int, request: bytes = request) -> object:
                    assert run.wire is not None
                    return await run.wire.load(request)

                cases.append(Case(WIRE, bare))
        for recorder in run.recorders:
            cases.append(Case(recorder.name, sync(recorder_loader(recorder, size))))
        for repository in run.repositories:
            wallet = repository.create(size)
            repository.get(wallet)  # cached from now on

            def cached(
                _: int,
                repository: peers.CachedRepository = repository,
                wallet: uuid.UUID = wallet,
                size: int = size,
            ) -> object:
                got = repository.get(wallet)
                if got.version != size:
                    raise RuntimeError(f"{repository.name}: version {got.version}, not {size}")
                return got

            cases.append(Case(repository.name, sync(cached)))
        before = run.hot.cache_stats
        await run.timed(hot_op(size), cases, s.samples // 2, size)
        after = run.hot.cache_stats
        # Every timed load a hit: none missed the cache or fell back from it.
        if (after.misses, after.fallbacks) != (before.misses, before.fallbacks):
            raise RuntimeError(
                f"the hot loads were not all served from the cache: {before} -> {after}"
            )
