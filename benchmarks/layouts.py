"""Stream layouts: angzarr_es in the per-domain layout (angzarr's bus: one
stream per domain, `<PREFIX>_<DOMAIN>`) beside the single layout, in the same
interleaved rounds; on a cluster, also how nats-server spread the leaders of
a dozen new domain streams over its servers.

Each layout gets fresh streams of its own, under prefixes of one length
(`<prefix>s`, `<prefix>d`: the subjects are the same size), so that the rows
differ by layout alone and neither stream holds the other cases' messages.
On a cluster the per-domain stream's leader is first moved to the server
leading the single stream, so that neither row pays a route hop the other
does not (every client is connected to the same server).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import angzarr_es
from angzarr_es.config import redact_url
from benchmarks.appends import cached_appender
from benchmarks.commits import event
from benchmarks.contenders import OURS, OURS_PER_DOMAIN
from benchmarks.context import (
    DOMAIN,
    HOT_CACHE_BYTES,
    LeaderSpread,
    Run,
    Server,
    config,
    drop_streams,
)
from benchmarks.harness import Case
from benchmarks.hot import hot_op
from benchmarks.loads import fill_subject, ours_loader
from benchmarks.raw import RawClient

SIZE = 100
"""Events of the loaded aggregate, in one-event commits."""
LEADER_TIMEOUT = 30.0
MOVES = 5
"""Leader stepdowns tried before the layouts are measured on different leaders."""


def layout_op(op: str) -> str:
    """The name of `op` measured in both layouts (apart from the other cases'
    rows of `op`, whose contenders share one stream)."""
    return f"{op}, by layout"


APPEND = layout_op("append 1 event (cached)")
LOAD = layout_op(f"load {SIZE} events (1/commit)")
HOT = layout_op(hot_op(SIZE))
OPS = (APPEND, LOAD, HOT)


@dataclass(frozen=True, slots=True)
class Layout:
    """One layout's clients: `cold` without the hot-aggregate cache, `hot` with it."""

    contender: str
    cold: angzarr_es.Client
    hot: angzarr_es.Client
    raw: RawClient
    """The run's raw connection, for the stream of `DOMAIN`'s commits (fills)."""
    made: list[str]
    """The streams provisioned for this layout (deleted after, on a server the
    run did not start)."""

    async def provision(self, domains: Sequence[str]) -> list[str]:
        """Provision `domains`' streams (per-domain layout); their names."""
        return await _provision(self.cold, self.made, domains)


async def _provision(
    client: angzarr_es.Client, made: list[str], domains: Sequence[str]
) -> list[str]:
    """Provision `client`'s streams and those of `domains` (per-domain
    layout), each name added to `made`; the streams holding the commits (of
    `domains`, in their order, or with none the single stream)."""
    plan = await client.plan_provision(domains=domains)
    made.extend(p.config.name for p in plan.streams if p.config.name not in made)
    await client.provision(domains=domains)
    if not domains:
        return [plan.events.config.name]
    names = {p.domain: p.config.name for p in plan.domains}
    return [names[domain] for domain in domains]


async def bench_layouts(run: Run, server: Server) -> None:
    print("stream layouts", flush=True)
    s = run.sizes
    async with _layouts(run, server) as layouts:
        note = (
            f"layouts: {layouts[0].raw.stream} (single) beside {layouts[1].raw.stream} "
            "(per-domain), new streams of their own"
        )
        if server.replicas > 1:
            note += f"; {await _same_leader(run, *layouts)}"
        run.notes.append(f"{note}; every client connected to {redact_url(run.url)}")
        appends = [
            Case(x.contender, cached_appender(x.cold.store(DOMAIN), [event()])) for x in layouts
        ]
        await run.timed(APPEND, appends, s.samples)
        cold: list[Case] = []
        hot: list[Case] = []
        for x in layouts:
            root = uuid.uuid4()
            await fill_subject(x.raw, x.cold.store(DOMAIN).subject(root), root, SIZE, 1)
            cold.append(Case(x.contender, ours_loader(x.cold.store(DOMAIN), root, SIZE)))
            await x.hot.store(DOMAIN).load(root)  # read once: hot from now on
            hot.append(Case(x.contender, ours_loader(x.hot.store(DOMAIN), root, SIZE)))
        await run.timed(LOAD, cold, s.samples // 2, SIZE)
        await run.timed(HOT, hot, s.samples // 2, SIZE)
        for x in layouts:
            cache = (await x.hot.health()).cache
            if cache is None or cache.fallbacks or cache.misses != 1:
                raise RuntimeError(f"{x.contender}: hot loads not all from the cache: {cache}")
        if server.replicas > 1:
            domains = [f"domain{i + 1}" for i in range(s.spread_domains)]
            run.leaders = await leader_spread(layouts[1], domains, server)
            run.notes.append(spread_note(run.leaders))


@contextlib.asynccontextmanager
async def _layouts(run: Run, server: Server) -> AsyncIterator[tuple[Layout, Layout]]:
    """A client pair in each layout, on streams of its own (deleted after on a
    server the run did not start)."""
    async with contextlib.AsyncExitStack() as stack:
        pair: list[Layout] = []
        for contender, letter in ((OURS, "s"), (OURS_PER_DOMAIN, "d")):
            cold = await _connect(stack, server, letter, 0)
            streams: list[str] = []
            if server.external:
                # Read on the way out: it holds every stream provisioned by then.
                stack.push_async_callback(drop_streams, cold, streams)
            [stream] = await _provision(cold, streams, [DOMAIN] if letter == "d" else [])
            hot = await _connect(stack, server, letter, HOT_CACHE_BYTES)
            pair.append(Layout(contender, cold, hot, RawClient(run.raw.nc, stream), streams))
        yield pair[0], pair[1]


async def _connect(
    stack: contextlib.AsyncExitStack, server: Server, letter: str, cache_bytes: int
) -> angzarr_es.Client:
    """A client in the single (`letter` "s") or per-domain ("d") layout, closed by `stack`."""
    prefix = server.prefix + letter
    cfg = config(
        server.url,
        "direct",
        f"{prefix}-events",
        prefix,
        server.replicas,
        cache_bytes,
        "per-domain" if letter == "d" else "single",
    )
    client = await angzarr_es.connect(config=cfg)
    stack.push_async_callback(client.close)
    return client


async def leaders(client: angzarr_es.Client, streams: Sequence[str]) -> dict[str, str]:
    """The leader of each of `streams` (STREAM.INFO's cluster.leader, through
    `health()`), once every one has a leader."""
    got = await _poll_leaders(client, streams, "", LEADER_TIMEOUT)
    if not all(got.values()):
        raise RuntimeError(f"streams without a leader after {LEADER_TIMEOUT:.0f} s: {got}")
    return got


async def _poll_leaders(
    client: angzarr_es.Client, streams: Sequence[str], want: str, timeout: float
) -> dict[str, str]:
    """`streams`' leaders once each has one (server `want`, if given), or as
    they were when `timeout` ran out ("": none)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {s.name: s.leader for s in (await client.health()).streams}
        got = {name: found.get(name, "") for name in streams}
        if all(got.values()) and (not want or set(got.values()) == {want}):
            return got
        if time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)  # polling interval while leaders are elected (set-up)


async def _same_leader(run: Run, single: Layout, per_domain: Layout) -> str:
    """Move the per-domain stream's leader to the single stream's; where they are.

    A leader hands over to the server named only if it heard from it lately;
    otherwise to another, or the election is won by whoever campaigns first.
    Hence a few attempts.
    """
    ours, theirs = single.raw.stream, per_domain.raw.stream
    found = await leaders(single.cold, [ours, theirs])
    target, now = found[ours], found[theirs]
    why = ""
    for _ in range(MOVES):
        if now == target:
            break
        why = await run.raw.move_leader(theirs, target)
        now = (await _poll_leaders(single.cold, [theirs], target, LEADER_TIMEOUT / MOVES))[theirs]
    if now != target:
        return (
            f"{ours} led by {target}, {theirs} by {now or 'nobody'} (not moved in {MOVES} "
            f"attempts{f': {why}' if why else ''})"
        )
    how = f"{theirs} moved there from {found[theirs]}" if found[theirs] != target else "as placed"
    return f"both led by {target} ({how})"


async def leader_spread(layout: Layout, domains: Sequence[str], server: Server) -> LeaderSpread:
    """Provision a stream for each of `domains` and count the leaders per server."""
    found = await leaders(layout.cold, await layout.provision(domains))
    counts = Counter(found.values())
    per_server = {name: counts[name] for name in sorted({*server.servers, *counts})}
    return LeaderSpread(replicas=server.replicas, leaders=found, per_server=per_server)


def spread_note(spread: LeaderSpread) -> str:
    """The spread in one line, with who decided it."""
    counts = ", ".join(f"{name} {n}" for name, n in spread.per_server.items())
    return (
        f"leaders of {len(spread.leaders)} new R{spread.replicas} per-domain streams, per "
        f"server: {counts}. angzarr_es asks for no placement; nats-server's meta leader "
        "gives each new stream a preferred leader picked at random among its online peers"
    )
