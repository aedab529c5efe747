"""The eventsourcing library's own test cases, unchanged, against a real nats-server.

Each persistence module of the library (SQLite, PostgreSQL) proves itself
with these reusable cases; the classes below only say how to make the
module's recorders and factory. Originator ids are UUIDs, and text ids with
characters that are not subject-safe (`/`, spaces), which reach their own
encoded subjects.
"""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
    TrackingRecorder,
)
from eventsourcing.tests import application as app_cases
from eventsourcing.tests import persistence as cases
from eventsourcing.utils import Environment

from angzarr_es.eventsourcing import (
    Factory,
    NatsAggregateRecorder,
    NatsApplicationRecorder,
    NatsProcessRecorder,
    NatsTrackingRecorder,
)
from tests.eventsourcing.support import WithNats


class TextIds(WithNats):
    id_type = "text"

    def new_originator_id(self) -> UUID | str:
        return f"account/{uuid4()} (text)"


# -- recorders ------------------------------------------------------------------


class TestAggregateRecorder(WithNats, cases.AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return self.make_factory().aggregate_recorder()


class TestAggregateRecorderWithTextIds(TextIds, TestAggregateRecorder):
    pass


class TestApplicationRecorder(WithNats, cases.ApplicationRecorderTestCase[ApplicationRecorder]):
    def create_recorder(self) -> ApplicationRecorder:
        return self.make_factory().application_recorder()

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestApplicationRecorderWithTextIds(TextIds, TestApplicationRecorder):
    pass


class TestTrackingRecorder(WithNats, cases.TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        return self.make_factory().tracking_recorder()


class TestProcessRecorder(WithNats, cases.ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return self.make_factory().process_recorder()


class TestProcessRecorderWithTextIds(TextIds, TestProcessRecorder):
    pass


class TestNonInterleavingNotificationIds(WithNats, cases.NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        return self.make_factory().application_recorder()


class TestNonInterleavingNotificationIdsWithTextIds(TextIds, TestNonInterleavingNotificationIds):
    pass


# -- the factory ------------------------------------------------------------------


class CustomTrackingRecorder(NatsTrackingRecorder):
    """A subclass named by TRACKING_RECORDER_TOPIC or passed to tracking_recorder()."""


class TestFactory(WithNats, cases.InfrastructureFactoryTestCase[Factory]):
    def prepare(self) -> None:
        self.env = Environment("TestCase", self.settings)  # the library's setUp reads it

    def expected_factory_class(self) -> type[Factory]:
        return Factory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return NatsAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return NatsApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return NatsTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return CustomTrackingRecorder

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return NatsProcessRecorder


# -- applications ---------------------------------------------------------------


# test_application_log records the DeprecationWarning it provokes; the
# suite's "error" filter would raise it instead.
@pytest.mark.filterwarnings("always::DeprecationWarning")
class TestApplication(WithNats, app_cases.ApplicationTestCase):
    def prepare(self) -> None:
        self.use_os_environ()


class TestExampleApplication(WithNats, app_cases.ExampleApplicationTestCase):
    expected_factory_topic = "angzarr_es.eventsourcing:Factory"

    def prepare(self) -> None:
        self.use_os_environ()


def test_the_module_is_found_by_its_topic(nats_url: str) -> None:
    # PERSISTENCE_MODULE names the package; the library finds its one factory class.
    env = Environment("x", {"PERSISTENCE_MODULE": "angzarr_es.eventsourcing", "NATS_URL": nats_url})
    factory = InfrastructureFactory.construct(env)
    try:
        assert type(factory) is Factory
    finally:
        factory.close()
