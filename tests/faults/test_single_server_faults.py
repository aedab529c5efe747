"""Single-server crashes and client-side faults: kill -9 and restart on the same
store dir, a server restarting under a long iter / load / append, connections
cut under the client, acks that never arrive.

Each operation must complete correctly after reconnecting or raise a typed
error, within a bound derived from the configured timeouts, and never leave a
commit half-written or written twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import TypeVar

import msgspec
import nats.aio.client
import pytest

import angzarr_es
from angzarr_es import ANY, ConcurrencyError, StoreTimeout, StoreUnavailable
from angzarr_es.config import Config
from angzarr_es.embedded import EmbeddedServer
from angzarr_es.testing import faults
from angzarr_es.testing.faults import Batch, BatchForward, Forward, Message, Reply, Request
from tests.support import jsadmin
from tests.support.cluster import eventually
from tests.support.configs import fresh_config
from tests.support.faultproxy import FaultProxy
from tests.support.loadgen import (
    TYPED,
    Ledger,
    PublishSpy,
    check_ledger,
    config_of,
    own_writer,
    tagged,
    until,
)
from tests.support.wirefaults import ack_stream_sequence, with_pending

pytestmark = pytest.mark.timeout(90)

T = TypeVar("T")

TIMEOUT = 0.5  # request_timeout for these tests: faults surface quickly
ATTEMPTS = 3
# An append may take every attempt plus one landed-check read before it gives up.
APPEND_BOUND = (ATTEMPTS + 1) * TIMEOUT + 1.0


@pytest.fixture
def server() -> Iterator[EmbeddedServer]:
    with EmbeddedServer(monitor_port=None) as s:
        yield s


def fast_config(url: str) -> Config:
    return fresh_config(url, request_timeout=TIMEOUT, append_attempts=ATTEMPTS)


@pytest.fixture
async def cfg(server: EmbeddedServer) -> AsyncIterator[Config]:
    config = fast_config(server.url)
    async with await angzarr_es.connect(config=config) as admin:
        await admin.provision()
        yield config
        await jsadmin.delete_stream(admin, config.nats.stream_name)


async def bounded(op: Awaitable[T], seconds: float) -> T | BaseException:
    """Run `op`; return its result or the typed error it raised. Fail on a hang."""
    started = time.monotonic()
    try:
        return await asyncio.wait_for(op, seconds)
    except TYPED as exc:
        return exc
    except TimeoutError as exc:
        if type(exc) is TimeoutError:  # wait_for's own, not StoreTimeout
            raise AssertionError(
                f"hung: no result nor typed error after {time.monotonic() - started:.1f}s"
            ) from exc
        raise


async def restart(server: EmbeddedServer) -> None:
    """kill -9, then start again on the same port and store dir."""
    await asyncio.to_thread(server.kill)
    await asyncio.to_thread(server.start)


# -- 5. crash and restart ------------------------------------------------------


@pytest.mark.parametrize("sync_always", [True, False], ids=["sync-always", "default-sync"])
async def test_kill9_during_appends_loses_no_acknowledged_append(sync_always: bool) -> None:
    """kill -9 while 8 writers append, restart on the same store dir.

    With `sync_interval: always` every acked append is fsynced before the ack.
    With the default (sync every 2 min) an R1 stream still writes each message
    to the OS before acking, so a *process* crash loses nothing either; only a
    machine crash (power, kernel) can lose up to sync_interval of acked appends,
    which a test on one machine cannot inject (docs/reliability.md).
    """
    with EmbeddedServer(monitor_port=None, sync_always=sync_always) as server:
        config = fast_config(server.url)
        ledger = Ledger()
        stop = asyncio.Event()
        async with await angzarr_es.connect(config=config) as client:
            await client.provision()
            store = client.store("player")
            tasks = [
                asyncio.create_task(own_writer(store, f"w{i}", ledger, stop)) for i in range(8)
            ]
            await eventually(lambda: until(len(ledger.acked) >= 300), timeout=30, what="300 acks")
            await restart(server)
            acked_at_kill = len(ledger.acked)
            marks = dict(ledger.by_writer)
            await eventually(
                lambda: until(all(ledger.by_writer[f"w{i}"] > marks[f"w{i}"] for i in range(8))),
                timeout=30,
                what="every writer to append again after the restart",
            )
            stop.set()
            await asyncio.gather(*tasks)
        total = await check_ledger(config, ledger, {f"own-w{i}" for i in range(8)})
        print(
            f"\nkill -9 (sync_always={sync_always}): {acked_at_kill} acked before the restart, "
            f"{len(ledger.acked)} in all, {total} events after restart; errors {dict(ledger.errors)}"
        )
        assert acked_at_kill >= 300


# -- 6. client-side faults -----------------------------------------------------


async def test_server_restart_during_a_long_iter(server: EmbeddedServer, cfg: Config) -> None:
    async with await angzarr_es.connect(config=cfg) as client:
        store = client.store("player")
        reason = "r" * 2000
        for i in range(120):  # 120 commits x 10 events x ~2 kB: several 1 MiB pages
            events = [tagged(f"{i}.{j}.{reason}") for j in range(10)]
            await store.append("long", events, expected=i * 10)
        seen: list[int] = []

        async def consume() -> None:
            async for event in store.iter("long"):
                seen.append(event.sequence)
                if len(seen) == 1:
                    await restart(server)

        outcome = await bounded(consume(), 15.0)
    print(f"\niter across a restart: {len(seen)} events, outcome {outcome!r}")
    assert seen == list(range(len(seen))), "events skipped or repeated"
    if outcome is None:
        assert len(seen) == 1200
    else:
        assert isinstance(outcome, (StoreUnavailable, StoreTimeout))


async def test_load_and_append_issued_while_the_server_is_down(
    server: EmbeddedServer, cfg: Config
) -> None:
    async with await angzarr_es.connect(config=cfg) as client:
        store = client.store("player")
        await store.append("p", [tagged("0")], expected=0)
        await asyncio.to_thread(server.kill)
        load = asyncio.create_task(bounded(store.load("p"), APPEND_BOUND))
        append = asyncio.create_task(
            bounded(store.append("p", [tagged("1")], expected=1), APPEND_BOUND)
        )
        await asyncio.to_thread(server.start)
        loaded, appended = await load, await append
        print(f"\nwhile down: load -> {loaded!r}, append -> {appended!r}")
        # Once reconnected, the aggregate is whole: the append is there once or not at all.
        hist = await eventually(lambda: store.load("p"), timeout=10, what="load after restart")
    reasons = [e.event.reason for e in hist.events]  # type: ignore[attr-defined]
    assert reasons in (["0"], ["0", "1"])
    if isinstance(appended, angzarr_es.AppendResult):
        assert reasons == ["0", "1"]
        assert appended.first_sequence == 1
    if isinstance(loaded, angzarr_es.History):
        assert [e.sequence for e in loaded.events][:1] == [0]


async def test_an_append_while_disconnected_sends_nothing(
    server: EmbeddedServer, cfg: Config
) -> None:
    """nats-py holds what is published while it reconnects and sends it once
    back: an append that failed while the server was down must not land
    later, or a caller's `ANY` retry would store the event twice."""
    async with await angzarr_es.connect(config=cfg) as client:
        store = client.store("player")
        await store.append("p", [tagged("0")], expected=0)
        await asyncio.to_thread(server.kill)
        await eventually(
            lambda: until(not client.connected),
            timeout=10,
            what="the disconnect",
        )
        with pytest.raises(angzarr_es.StoreUnavailable, match="nothing sent"):
            await store.append("p", [tagged("1")], expected=angzarr_es.ANY)
        await asyncio.to_thread(server.start)
        await eventually(lambda: until(client.connected), timeout=10, what="reconnect")
        await store.append("p", [tagged("1")], expected=angzarr_es.ANY)  # the caller's retry
        hist = await store.load("p")
    assert [e.event.reason for e in hist.events] == ["0", "1"]  # type: ignore[attr-defined]


async def test_connections_cut_under_writers(server: EmbeddedServer, cfg: Config) -> None:
    proxy = await FaultProxy(server.port).start()
    config = config_of(msgspec.structs.replace(cfg.nats, url=proxy.url))
    ledger = Ledger()
    stop = asyncio.Event()
    try:
        async with await angzarr_es.connect(config=config) as client:
            store = client.store("player")
            tasks = [
                asyncio.create_task(own_writer(store, f"c{i}", ledger, stop)) for i in range(4)
            ]
            for cut in range(4):
                mark = len(ledger.acked)
                await eventually(
                    lambda m=mark: until(len(ledger.acked) >= m + 50),  # type: ignore[misc]
                    timeout=20,
                    what=f"50 appends after cut {cut}",
                )
                if cut < 3:
                    proxy.cut()
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        await proxy.close()
    total = await check_ledger(cfg, ledger, {f"own-c{i}" for i in range(4)})
    print(
        f"\n3 cuts: {proxy.connections} connections, {len(ledger.acked)} acked, "
        f"{total} events; errors {dict(ledger.errors)}"
    )
    assert proxy.connections >= 4


@contextlib.asynccontextmanager
async def through_proxy(
    server: EmbeddedServer, cfg: Config
) -> AsyncIterator[tuple[angzarr_es.Client, FaultProxy]]:
    """A client connected to `server` through a FaultProxy."""
    proxy = await FaultProxy(server.port).start()
    config = config_of(msgspec.structs.replace(cfg.nats, url=proxy.url))
    try:
        async with await angzarr_es.connect(config=config) as client:
            yield client, proxy
    finally:
        await proxy.close()


async def test_an_ack_that_never_arrives(server: EmbeddedServer, cfg: Config) -> None:
    """The server stores the commit but no reply ever reaches the client."""
    async with through_proxy(server, cfg) as (client, proxy):
        store = client.store("player")
        spy = PublishSpy(client)
        await store.append("a", [tagged("0")], expected=0)
        proxy.swallow = True
        started = time.monotonic()
        outcome = await bounded(store.append("a", [tagged("1")], expected=1), APPEND_BOUND + 2)
        elapsed = time.monotonic() - started
        assert isinstance(outcome, StoreTimeout), outcome
        assert elapsed < APPEND_BOUND
        # Every attempt carried the same Nats-Msg-Id.
        assert sorted(spy.ids.values()) == [1, ATTEMPTS]
        # Heal the network: replies flow again on a new connection.
        proxy.swallow = False
        proxy.cut()
        hist = await eventually(lambda: store.load("a"), timeout=10, what="reconnect")
        # It did land, once; the caller's retry with its stale expected is a conflict.
        assert [e.event.reason for e in hist.events] == ["0", "1"]  # type: ignore[attr-defined]
        with pytest.raises(ConcurrencyError) as info:
            await store.append("a", [tagged("1")], expected=1)
        assert info.value.actual == 2
    print(
        f"\nack never arrives: StoreTimeout after {elapsed:.2f}s, {proxy.swallowed} bytes swallowed"
    )


async def test_a_request_in_flight_when_the_connection_drops_fails_at_once(
    server: EmbeddedServer, cfg: Config
) -> None:
    """No reply can arrive on a connection that dropped: a request waiting
    for one fails at the disconnect (for a publish, StoreTimeout: the outcome
    is unknown), not when its timeout runs out. Measured before
    (benchmarks/outage.py, kill -9 of a follower): the writers connected to
    it stopped for the whole request_timeout (2 s) while the stream never
    lost its leader."""
    patient = config_of(msgspec.structs.replace(cfg.nats, request_timeout=10.0))
    async with through_proxy(server, patient) as (client, proxy):
        store = client.store("player")
        await store.append("d", [tagged("0")], expected=0)
        proxy.swallow = True
        task = asyncio.create_task(
            store.append("d", [tagged("1")], expected=1, idempotency_key="d-1")
        )
        await eventually(lambda: until(proxy.swallowed > 0), timeout=5, what="the ack")
        started = time.monotonic()
        proxy.swallow = False
        proxy.cut()
        outcome = await bounded(task, 30)
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, f"the append waited {elapsed:.1f}s after the connection dropped"
        assert isinstance(outcome, StoreTimeout), outcome
        again = await eventually(
            lambda: store.append("d", [tagged("1")], expected=1, idempotency_key="d-1"),
            timeout=10,
            what="the retry with the key",
        )
        assert (again.first_sequence, again.next_sequence, again.duplicate) == (1, 2, True)
        hist = await store.load("d")
        assert [e.event.reason for e in hist.events] == ["0", "1"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("key", ["", "cmd-2"], ids=["random-id", "keyed"])
async def test_an_unanswered_publish_is_sent_again_before_its_timeout(
    server: EmbeddedServer, cfg: Config, key: str
) -> None:
    """A publish without an answer for half a second is sent again (same
    bytes, same Nats-Msg-Id) while the first copy is still awaited, and the
    first answer wins. Measured before (benchmarks/outage.py, SIGSTOP of the
    leader): a publish sent to the frozen leader just before the election
    held its writer for the rest of its timeout after the new leader was
    serving (up to request_timeout, 2 s)."""
    patient = config_of(msgspec.structs.replace(cfg.nats, request_timeout=10.0))
    async with through_proxy(server, patient) as (client, proxy):
        store = client.store("player")
        spy = PublishSpy(client)
        await store.append("h", [tagged("0")], expected=0)
        proxy.swallow = True
        started = time.monotonic()
        task = asyncio.create_task(
            store.append("h", [tagged("1")], expected=1, idempotency_key=key)
        )
        await eventually(lambda: until(proxy.swallowed > 0), timeout=5, what="the ack")
        proxy.swallow = False  # the next copy's answer gets through
        result = await asyncio.wait_for(task, 30)
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, f"the append took {elapsed:.1f}s"
        assert (result.first_sequence, result.next_sequence, result.duplicate) == (1, 2, False)
        hist = await store.load("h")
        assert [e.event.reason for e in hist.events] == ["0", "1"]  # type: ignore[attr-defined]
    print(f"\nunanswered publish ({key or 'random id'}): stored in {elapsed:.2f}s; {spy.trail}")


@pytest.mark.parametrize("read", ["direct_get", "leader_read"])
async def test_an_unanswered_read_is_sent_again_before_its_timeout(
    server: EmbeddedServer, cfg: Config, read: str
) -> None:
    """The reads of the write path (Direct Get of the last commit; the
    leader's STREAM.MSG.GET) are sent again too. Measured before
    (benchmarks/outage.py, SIGSTOP of the leader): the read looking for an
    unanswered commit, sent just before a new leader was elected, held its
    writer for its whole timeout (1.8 s after the new leader served)."""
    patient = config_of(msgspec.structs.replace(cfg.nats, request_timeout=10.0))
    async with through_proxy(server, patient) as (client, proxy):
        store = client.store("player")
        await store.append("r", [tagged("0")], expected=0)

        async def op() -> int:
            if read == "direct_get":
                return await store.next_sequence("r")
            return await store.next_sequence("r", leader=True)

        proxy.swallow = True
        started = time.monotonic()
        task = asyncio.create_task(op())
        await eventually(lambda: until(proxy.swallowed > 0), timeout=5, what="the reply")
        proxy.swallow = False
        got = await asyncio.wait_for(task, 30)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"the read took {elapsed:.1f}s"
    assert got == 1


async def test_a_timed_out_append_retried_with_its_key_is_not_stored_twice(
    server: EmbeddedServer, cfg: Config
) -> None:
    """StoreTimeout (outcome unknown), then the caller's retry with the same key."""
    async with through_proxy(server, cfg) as (client, proxy):
        store = client.store("player")
        await store.append("k", [tagged("0")], expected=0)
        proxy.swallow = True
        lost = store.append("k", [tagged("1")], expected=ANY, idempotency_key="cmd-1")
        assert isinstance(await bounded(lost, APPEND_BOUND + 2), StoreTimeout)
        proxy.swallow = False
        proxy.cut()
        await eventually(lambda: store.load("k"), timeout=10, what="reconnect")
        # A blind ANY retry would store "1" again; with its key it does not.
        again = await store.append("k", [tagged("1")], expected=ANY, idempotency_key="cmd-1")
        assert (again.first_sequence, again.next_sequence, again.duplicate) == (1, 2, True)
        hist = await store.load("k")
        assert [e.event.reason for e in hist.events] == ["0", "1"]  # type: ignore[attr-defined]


async def test_a_key_replayed_after_its_edition_was_deleted_again_and_again(
    server: EmbeddedServer, cfg: Config
) -> None:
    """Each deletion leaves the server one more remembered id for the key;
    finding past them must not use up the lost-ack attempts."""
    config = config_of(msgspec.structs.replace(cfg.nats, append_attempts=1))
    async with await angzarr_es.connect(config=config) as client:
        what_if = client.store("player", "again")
        for round_ in range(4):
            stored = await what_if.append(
                "p", [tagged(str(round_))], expected=0, idempotency_key="k"
            )
            assert (stored.first_sequence, stored.duplicate) == (0, False), round_
            repeat = await what_if.append("p", [tagged("x")], expected=ANY, idempotency_key="k")
            assert (repeat.stream_sequence, repeat.duplicate) == (stored.stream_sequence, True)
            reasons = [e.event.reason for e in (await what_if.load("p")).events]  # type: ignore[attr-defined]
            assert reasons == [str(round_)]
            assert await client.delete_edition("again") == 1


@pytest.mark.parametrize("key", ["", "cmd-b"])
async def test_a_lost_ack_over_the_network_is_retried_once(
    server: EmbeddedServer, cfg: Config, key: str
) -> None:
    """The first ack is swallowed on the wire; the copy sent again finds the
    commit is ours (with an idempotency key too: not an earlier call's
    duplicate). The copy goes out while the first is still awaited
    (`Wire.resend_after`): one publish call, answered 10071 by the copy, as
    a single server checks the expected sequence before de-duplicating."""
    async with through_proxy(server, cfg) as (client, proxy):
        store = client.store("player")
        spy = PublishSpy(client)
        await store.append("b", [tagged("0")], expected=0)
        proxy.swallow = True
        task = asyncio.create_task(
            store.append("b", [tagged("1")], expected=1, idempotency_key=key)
        )
        await eventually(lambda: until(proxy.swallowed > 0), timeout=5, what="the ack")
        proxy.swallow = False
        result = await asyncio.wait_for(task, APPEND_BOUND)
        assert (result.first_sequence, result.next_sequence, result.duplicate) == (1, 2, False)
        assert spy.trail == ["ok", "10071"]
        hist = await store.load("b")
        assert [e.event.reason for e in hist.events] == ["0", "1"]  # type: ignore[attr-defined]


async def test_direct_get_from_a_lagging_replica_is_completed_from_the_leader(cfg: Config) -> None:
    """Direct Get may be answered by a replica that lags (measured on R3): a
    load and an iter still return what this process has seen committed, the
    missing tail read from the stream leader. (Without the hot-aggregate
    cache: tests/integration/test_store_cache.py has its lagging replicas.)"""
    config = config_of(msgspec.structs.replace(cfg.nats, cache_bytes=0))
    async with await angzarr_es.connect(config=config) as c:
        store = c.store("player")
        seqs = [
            (await store.append("lag", [tagged(str(i))], expected=i)).stream_sequence
            for i in range(5)
        ]
        subject = store.subject("lag")
        leader_reads = 0

        async def lagging(request: Request, forward: BatchForward) -> Batch:
            got = await forward(request)
            if msgspec.json.decode(request.payload)["seq"] <= seqs[0]:
                # this replica has only the first three commits
                return Batch(got.messages[:3], "204", seqs[2], 0)
            return got

        async def leader_next(request: Request, forward: Forward) -> Reply:
            nonlocal leader_reads
            if faults.operation(request) == "STREAM.MSG.GET":
                leader_reads += msgspec.json.decode(request.payload).get("next_by_subj") == subject
            return await forward(request)

        with faults.intercept(c, on_request=leader_next, on_batch=lagging):
            hist = await store.load("lag")
            assert [e.sequence for e in hist.events] == [0, 1, 2, 3, 4]
            assert hist.next_sequence == 5
            assert leader_reads == 3  # commits 3 and 4, then the end
            part = await store.load("lag", 1, 4)
            assert [e.sequence for e in part.events] == [1, 2, 3]
            assert [e.sequence async for e in store.iter("lag", 2)] == [2, 3, 4]


async def test_consumer_replay_outlives_its_consumer(cfg: Config) -> None:
    """A replay consumer left idle past its inactive threshold (30 s) while the
    caller works through a page is deleted by the server: the iteration goes
    on with a new one from where it was (found by review: a 503 mid-replay)."""
    # Without the cache: the iteration must go through the replay consumer.
    config = config_of(msgspec.structs.replace(cfg.nats, replay="consumer", cache_bytes=0))
    async with await angzarr_es.connect(config=config) as c:
        store = c.store("player")
        for i in range(1200):  # more commits than one pull fetches (1000)
            await store.append("slow", [tagged(str(i))], expected=i)
        seen = []
        async for e in store.iter("slow"):
            seen.append(e.sequence)
            if e.sequence == 5:  # as the inactive threshold would, mid-page
                names = await jsadmin.consumer_names(c, config.nats.stream_name)
                assert len(names) == 1
                await jsadmin.delete_consumer(c, config.nats.stream_name, names[0])
        assert seen == list(range(1200))
        assert await jsadmin.consumer_names(c, config.nats.stream_name) == []


async def test_consumer_replay_on_a_lagging_replica_is_completed_from_the_leader(
    server: EmbeddedServer, cfg: Config
) -> None:
    """An R1 replay consumer may be placed on a lagging replica (measured on R3):
    what this process has seen committed must still come back."""
    config = config_of(msgspec.structs.replace(cfg.nats, replay="consumer", cache_bytes=0))
    async with await angzarr_es.connect(config=config) as c:
        store = c.store("player")
        for i in range(5):
            await store.append("lag", [tagged(str(i))], expected=i)
        lagged = 0

        async def lagging(request: Request, forward: BatchForward) -> Batch:
            """A replay consumer on a replica that has stream sequences up to 3:
            its pull ends there, nothing pending."""
            nonlocal lagged
            got = await forward(request)
            if faults.operation(request) != "CONSUMER.MSG.NEXT":
                return got
            kept = [m for m in got.messages if ack_stream_sequence(m.reply) <= 3]
            if not kept:
                return Batch([], "404")
            lagged += 1
            last = kept[-1]
            return Batch([*kept[:-1], Message(last.data, with_pending(last.reply, 0))], got.status)

        with faults.intercept(c, on_batch=lagging):
            hist = await store.load("lag")
            assert [e.sequence for e in hist.events] == [0, 1, 2, 3, 4]
            assert [e.sequence async for e in store.iter("lag", 2)] == [2, 3, 4]
        assert lagged == 2


async def test_a_server_that_accepts_but_never_answers_leaks_no_socket(
    server: EmbeddedServer, cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen server accepts TCP connections (the kernel does) but never
    sends INFO. Reconnecting, nats-py reuses its transport object and
    connected to the next server over the open socket, leaving it to the
    garbage collector (ResourceWarning: unclosed StreamWriter; it failed a
    5-minute nemesis run once clients left frozen servers for others)."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    accepted: list[asyncio.StreamWriter] = []
    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    # The pool in the order given: the real server first, then the silent one.
    monkeypatch.setattr(nats.aio.client, "shuffle", lambda pool: None)
    urls = [server.url, f"nats://127.0.0.1:{port}"]
    config = config_of(msgspec.structs.replace(cfg.nats, url=urls, connect_timeout=0.5))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            async with await angzarr_es.connect(config=config) as client:
                await asyncio.to_thread(server.kill)
                # Reconnecting: the real server refuses, the silent one is
                # tried, times out, is tried again.
                await eventually(
                    lambda: until(len(accepted) >= 2), timeout=10, what="two silent attempts"
                )
                await asyncio.to_thread(server.start)
                await eventually(
                    lambda: until(client.connected_url == server.url),
                    timeout=10,
                    what="the reconnect to the real server",
                )
                gc.collect()
    finally:
        for w in accepted:
            w.close()
        listener.close()
        await listener.wait_closed()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, leaks
