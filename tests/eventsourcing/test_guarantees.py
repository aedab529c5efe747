"""What the library's cases cannot see: atomicity checked on the server, a
second connection, notification ids returned against ids read, and no lost
subscription wake-ups."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from uuid import UUID, uuid4

import msgspec
import pytest
from eventsourcing.persistence import (
    ApplicationRecorder,
    DataError,
    IntegrityError,
    InterfaceError,
    Notification,
    ProcessRecorder,
    StoredEvent,
    Tracking,
)

from angzarr_es.eventsourcing import Factory
from angzarr_es.testing import faults
from angzarr_es.testing.faults import Batch, BatchForward, Request
from tests.eventsourcing.support import WithNats, consumer_count, stream_state
from tests.support.wirefaults import replica_page

WAIT = 30.0
"""Seconds a thread may take to see what it waits for (a failure, not a pause)."""


def event(originator_id: UUID, version: int, topic: str = "topic") -> StoredEvent:
    return StoredEvent(originator_id, version, topic, f"state {version}".encode())


def finished(target: Callable[[], None], *, timeout: float = WAIT) -> None:
    """Run `target` on a thread; fail if it has not returned within `timeout`."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{target} still running after {timeout}s"
    if errors:
        raise errors[0]


class TestAtomicity(WithNats):
    def test_a_refused_insert_across_aggregates_stores_nothing(self) -> None:
        first = self.make_factory().application_recorder()
        a, b = uuid4(), uuid4()
        first.insert_events([event(b, 1)])
        before = stream_state(self.make_factory())
        # A second connection knows nothing of b: it sends the batch, and the
        # server refuses it whole (b's slot is taken).
        second = self.make_factory().application_recorder()
        with pytest.raises(IntegrityError):
            second.insert_events([event(a, 1), event(a, 2), event(b, 1), event(a, 3)])
        after = stream_state(self.make_factory())
        assert (after.messages, after.last_seq) == (before.messages, before.last_seq)
        assert second.select_events(a) == []
        assert first.select_events(a) == []

        ids = second.insert_events([event(a, 1), event(b, 2), event(a, 2)])
        assert ids == [before.last_seq + 1, before.last_seq + 2, before.last_seq + 3]
        assert [e.originator_version for e in first.select_events(b)] == [1, 2]

    def test_events_and_tracking_are_stored_together_or_not_at_all(self) -> None:
        first = self.make_factory().process_recorder()
        second = self.make_factory().process_recorder()
        a, b = uuid4(), uuid4()
        first.insert_events([event(b, 1)], tracking=Tracking("upstream", 5))

        # The events conflict (the server decides): the tracking record is not stored.
        before = stream_state(self.make_factory())
        with pytest.raises(IntegrityError):
            second.insert_events([event(a, 1), event(b, 1)], tracking=Tracking("upstream", 6))
        assert stream_state(self.make_factory()).last_seq == before.last_seq
        assert first.max_tracking_id("upstream") == 5

        # The tracking record conflicts (the second connection read 5, the
        # first then tracked 6): the events are not stored.
        assert second.max_tracking_id("upstream") == 5
        first.insert_events([], tracking=Tracking("upstream", 6))
        before = stream_state(self.make_factory())
        with pytest.raises(IntegrityError):
            second.insert_events([event(a, 1), event(a, 2)], tracking=Tracking("upstream", 6))
        assert stream_state(self.make_factory()).last_seq == before.last_seq
        assert second.select_events(a) == []

        # Both fine: stored with consecutive stream sequences, the tracking record last.
        ids = second.insert_events([event(a, 1), event(a, 2)], tracking=Tracking("upstream", 7))
        assert ids == [before.last_seq + 1, before.last_seq + 2]
        after = stream_state(self.make_factory())
        assert (after.messages, after.last_seq) == (before.messages + 3, before.last_seq + 3)
        assert first.max_tracking_id("upstream") == 7

    def test_an_insert_over_a_thousand_records_is_refused_whole(self) -> None:
        recorder = self.make_factory().process_recorder()
        a = uuid4()
        with pytest.raises(DataError, match="at most 1000"):
            recorder.insert_events(
                [event(a, v) for v in range(1, 1001)], tracking=Tracking("up", 1)
            )
        assert recorder.select_events(a) == []
        assert len(recorder.insert_events([event(a, v) for v in range(1, 1001)]) or []) == 1000


class TestSecondConnection(WithNats):
    def test_a_second_connection_reads_and_checks_the_firsts_writes(self) -> None:
        writer: ProcessRecorder = self.make_factory().process_recorder()
        reader: ProcessRecorder = self.make_factory().process_recorder()
        a = uuid4()
        ids = writer.insert_events([event(a, 1), event(a, 2)], tracking=Tracking("up", 3))
        assert ids is not None
        assert [e.originator_version for e in reader.select_events(a)] == [1, 2]
        assert reader.select_events(a, desc=True, limit=1)[0].originator_version == 2
        assert [n.id for n in reader.select_notifications(None, 10)] == ids
        assert reader.max_notification_id() == ids[-1]
        assert reader.max_tracking_id("up") == 3
        # The reader's view is now current: its own insert conflicts where it should.
        with pytest.raises(IntegrityError):
            reader.insert_events([event(a, 2)])
        reader.insert_events([event(a, 3)])
        with pytest.raises(IntegrityError):
            writer.insert_events([event(a, 3)])
        assert [e.originator_version for e in writer.select_events(a)] == [1, 2, 3]

    def test_a_lagging_replica_is_completed_from_the_leader(self) -> None:
        # Direct Get may be answered by a replica that is behind: it serves a
        # prefix. A process still reads its own writes (the rest from the leader).
        recorder = self.make_factory().application_recorder()
        a = uuid4()
        ids = recorder.insert_events([event(a, v) for v in range(1, 6)])
        behind = (ids or [0])[1]  # the replica has the first two only

        cut: list[int] = []

        async def lagging(request: Request, forward: BatchForward) -> Batch:
            got = await forward(request)
            if faults.operation(request) != "DIRECT.GET":
                return got
            start = msgspec.json.decode(request.payload)["seq"]
            keep = max(0, behind - start + 1)
            if keep < len(got.messages):
                cut.append(start)
            return replica_page(got, keep, start + keep - 1 if keep else 0)

        with faults.intercept(recorder.datastore, on_batch=lagging):  # type: ignore[attr-defined]
            assert [n.id for n in recorder.select_notifications(None, 10)] == ids
            assert [e.originator_version for e in recorder.select_events(a)] == [1, 2, 3, 4, 5]
        assert cut  # the replica's answers were short


class TestNotificationIds(WithNats):
    def test_ids_returned_are_the_ids_read(self) -> None:
        recorder = self.make_factory().application_recorder()
        returned: dict[int, tuple[UUID, int]] = {}
        lock = threading.Lock()

        def write(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(40):
                a = uuid4()
                batch = [event(a, v) for v in range(1, rng.choice((1, 1, 2, 5)) + 1)]
                ids = recorder.insert_events(batch)
                assert ids is not None
                assert len(ids) == len(batch)
                assert ids == list(range(ids[0], ids[0] + len(ids)))
                with lock:
                    for i, e in zip(ids, batch, strict=True):
                        assert i not in returned
                        returned[i] = (UUID(str(e.originator_id)), e.originator_version)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        assert not any(t.is_alive() for t in threads)
        read = {
            n.id: (UUID(str(n.originator_id)), n.originator_version)
            for n in _all_notifications(recorder)
        }
        assert read == returned
        assert recorder.max_notification_id() == max(returned)


def _all_notifications(recorder: ApplicationRecorder) -> Iterator[Notification]:
    start = 0
    while page := recorder.select_notifications(start, 100, inclusive_of_start=False):
        yield from page
        start = page[-1].id


class TestSubscriptions(WithNats):
    def test_no_wake_up_is_lost(self) -> None:
        # Writers on two connections, a subscriber on a third reading while
        # they write: every notification arrives, in order, whatever the
        # interleaving (more of them than the subscription buffers).
        writers = [self.make_factory().application_recorder() for _ in range(2)]
        subscriber = self.make_factory().application_recorder()
        expected: set[int] = set()
        lock = threading.Lock()

        def write(recorder: ApplicationRecorder, seed: int) -> None:
            rng = random.Random(seed)
            for n in range(150):
                a = uuid4()
                size = 1000 if n == 75 else rng.choice((1, 1, 1, 3))
                ids = recorder.insert_events([event(a, v) for v in range(1, size + 1)])
                with lock:
                    expected.update(ids or [])

        seen: list[int] = []
        with subscriber.subscribe(gt=None) as subscription:

            def receive() -> None:
                for notification in subscription:
                    if notification.topic == "end":
                        return
                    seen.append(notification.id)

            reader = threading.Thread(target=receive)
            reader.start()
            threads = [threading.Thread(target=write, args=(w, n)) for n, w in enumerate(writers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(WAIT)
            writers[0].insert_events([event(uuid4(), 1, "end")])
            reader.join(WAIT)
            alive = reader.is_alive()
        assert not alive, f"the subscriber saw {len(seen)} of {len(expected)} and waits"
        assert seen == sorted(expected)

    def test_a_subscription_made_just_before_an_insert_sees_it(self) -> None:
        recorder = self.make_factory().application_recorder()
        for _ in range(25):
            with recorder.subscribe(gt=recorder.max_notification_id()) as subscription:
                ids = recorder.insert_events([event(uuid4(), 1)])
                got: list[int] = []

                def receive(
                    s: Iterator[Notification] = subscription, into: list[int] = got
                ) -> None:
                    into.append(next(s).id)

                finished(receive)
                assert got == ids

    def test_topics_are_filtered_and_gt_is_respected(self) -> None:
        recorder = self.make_factory().application_recorder()
        a = uuid4()
        ids = recorder.insert_events([event(a, v, f"t{v % 2}") for v in range(1, 7)])
        assert ids is not None
        with recorder.subscribe(gt=ids[1], topics=["t1"]) as subscription:
            got: list[int] = []

            def receive() -> None:
                for n in subscription:
                    got.append(n.id)
                    if n.id == ids[4]:
                        return

            finished(receive)
        assert got == [ids[2], ids[4]]

    def test_closing_the_factory_ends_iteration_and_deletes_the_consumer(self) -> None:
        factory = self.make_factory()
        recorder = factory.application_recorder()
        subscription = recorder.subscribe()
        admin = self.make_factory()

        def consumers() -> int:
            return consumer_count(admin)

        assert consumers() == 1
        ended: list[bool] = []

        def iterate() -> None:
            for _ in subscription:
                pass
            ended.append(True)

        thread = threading.Thread(target=iterate)
        thread.start()
        factory.close()
        thread.join(WAIT)
        assert ended == [True]
        assert consumers() == 0
        factory.close()  # twice: nothing happens

    def test_leaving_the_with_block_deletes_the_consumer(self) -> None:
        recorder = self.make_factory().application_recorder()
        admin = self.make_factory()
        with recorder.subscribe():
            assert consumer_count(admin) == 1
        assert consumer_count(admin) == 0


def test_a_closed_factory_refuses_at_once(nats_url: str) -> None:
    factory = Factory({"NATS_URL": nats_url, "ANGZARR_ES_STREAM": "unused", "CREATE_TABLE": "no"})
    recorder = factory.application_recorder()
    factory.close()
    factory.close()  # the application closes its factory, then its finalizer does again
    with pytest.raises(InterfaceError, match="closed"):
        recorder.max_notification_id()
    with pytest.raises(InterfaceError, match="closed"):
        recorder.insert_events([event(uuid4(), 1)])


def test_a_factory_dropped_without_close_leaves_no_thread(nats_url: str) -> None:
    import gc

    before = set(threading.enumerate())
    factory = Factory({"NATS_URL": nats_url, "ANGZARR_ES_STREAM": "unused", "CREATE_TABLE": "no"})
    started = [t for t in threading.enumerate() if t not in before]
    assert started  # its event loop's thread, at least
    del factory
    gc.collect()
    for thread in started:
        thread.join(WAIT)
    assert [t for t in started if t.is_alive()] == []
