"""The module on a three-server cluster (R3 stream): the stream leader is
killed while writers insert. Nothing acknowledged is lost, nothing is stored
twice, and an insert whose outcome was unknown is there whole or not at all."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent
from eventsourcing.utils import Environment

import angzarr_es
from angzarr_es.eventsourcing import Factory
from tests.eventsourcing.support import stream_name
from tests.support.cluster import Cluster, eventually
from tests.support.configs import fresh_config

pytestmark = pytest.mark.timeout(180)

WRITERS = 4
BEFORE_KILL = 150
AFTER_KILL = 150
WAIT = 60.0


class Ledger:
    """What the writers were told, shared between their threads."""

    def __init__(self) -> None:
        self.acked: dict[tuple[uuid.UUID, int], int] = {}
        self.unknown: list[list[tuple[uuid.UUID, int]]] = []
        self.conflicts = 0
        self.changed = threading.Condition()
        self.stop = threading.Event()

    def wait_for(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.acked) >= count, WAIT)


def write(factory: Factory, ledger: Ledger) -> None:
    """Extend one aggregate after another, 1-3 events at a time."""
    recorder = factory.application_recorder()
    originator, version, n = uuid.uuid4(), 0, 0
    while not ledger.stop.is_set():
        n += 1
        if n % 20 == 0:
            originator, version = uuid.uuid4(), 0
        events = [
            StoredEvent(originator, version + i, "topic", b"state") for i in range(1, n % 3 + 2)
        ]
        keys = [(originator, e.originator_version) for e in events]
        try:
            ids = recorder.insert_events(events)
        except IntegrityError:
            # Only an insert reported lost that had landed could cause one.
            with ledger.changed:
                ledger.conflicts += 1
            return
        except OperationalError:
            with ledger.changed:
                ledger.unknown.append(keys)
            # Go on with a new aggregate: whether these landed is checked at the end.
            originator, version = uuid.uuid4(), 0
            # A caller's retry pause: while its server is gone, inserts fail
            # at once (nothing sent), and the writers would spin.
            ledger.stop.wait(0.01)
            continue
        assert ids is not None
        version = events[-1].originator_version
        with ledger.changed:
            ledger.acked.update(zip(keys, ids, strict=True))
            ledger.changed.notify_all()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with Cluster(3) as c:
        yield c


async def test_a_leader_kill_during_inserts_loses_and_duplicates_nothing(cluster: Cluster) -> None:
    stream = stream_name()
    settings = {
        "NATS_URL": ",".join(cluster.urls),
        "ANGZARR_ES_STREAM": stream,
        "ANGZARR_ES_REPLICAS": "3",
        "NATS_REQUEST_TIMEOUT": "1",
    }
    factories = [Factory(Environment("app", settings)) for _ in range(2)]
    ledger = Ledger()
    admin = await angzarr_es.connect(config=fresh_config(",".join(cluster.urls)))
    threads: list[threading.Thread] = []
    try:
        # The R3 stream, once the new cluster has a meta leader and its peers.
        async def created() -> bool | None:
            try:
                await asyncio.to_thread(factories[0].application_recorder)
            except OperationalError:
                return None
            return True

        await eventually(created, timeout=30, what="the R3 stream to be created")
        await cluster.wait_for_leader(admin, stream, current=True)
        threads = [
            threading.Thread(target=write, args=(factories[w % 2], ledger)) for w in range(WRITERS)
        ]
        for t in threads:
            t.start()
        assert await asyncio.to_thread(ledger.wait_for, BEFORE_KILL)
        leader = await cluster.stream_leader(admin, stream)
        assert leader is not None
        cluster.kill(leader)
        await cluster.wait_for_leader(admin, stream, not_in=frozenset({leader}))
        assert await asyncio.to_thread(ledger.wait_for, len(ledger.acked) + AFTER_KILL)
        ledger.stop.set()
        for t in threads:
            t.join(WAIT)
        # Reads may be answered by any replica: bring the killed server back
        # and let every replica catch up before counting.
        cluster.restart(leader)
        await cluster.wait_for_leader(admin, stream, current=True)
    finally:
        ledger.stop.set()
        for t in threads:
            t.join(WAIT)
        await admin.close()
    try:
        assert ledger.conflicts == 0, "an insert was told it lost to itself"
        reader = factories[0].application_recorder()
        notifications = await asyncio.to_thread(reader.select_notifications, None, 1_000_000)
        read = {
            (uuid.UUID(str(n.originator_id)), n.originator_version): n.id for n in notifications
        }
        assert len(read) == len(notifications), "an (aggregate, version) stored twice"
        assert max(Counter(n.id for n in notifications).values()) == 1
        missing = {k: v for k, v in ledger.acked.items() if read.get(k) != v}
        assert missing == {}, f"{len(missing)} acknowledged events lost or renumbered"
        for keys in ledger.unknown:
            present = [k in read for k in keys]
            assert all(present) or not any(present), f"an insert stored in part: {keys}"
        by_aggregate: dict[uuid.UUID, list[int]] = {}
        for originator, version in sorted(read, key=lambda k: read[k]):
            by_aggregate.setdefault(originator, []).append(version)
        for versions in by_aggregate.values():
            assert versions == list(range(1, len(versions) + 1))
        print(
            f"\nleader {leader} killed: {len(ledger.acked)} events acknowledged, "
            f"{len(ledger.unknown)} inserts of unknown outcome, {len(read)} stored"
        )
    finally:
        for factory in factories:
            factory.close()
        cluster.ensure_running()
