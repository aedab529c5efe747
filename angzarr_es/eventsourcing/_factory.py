"""`Factory`: the module's infrastructure factory, selected by
`PERSISTENCE_MODULE=angzarr_es.eventsourcing`."""

from __future__ import annotations

from typing import TypeVar

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    ProcessRecorder,
    ProgrammingError,
)
from eventsourcing.utils import Environment, EnvType, resolve_topic

from angzarr_es.eventsourcing._datastore import Datastore
from angzarr_es.eventsourcing._recorders import (
    NatsAggregateRecorder,
    NatsApplicationRecorder,
    NatsProcessRecorder,
    NatsRecorder,
    NatsTrackingRecorder,
)
from angzarr_es.eventsourcing._settings import create_stream, read_settings

__all__ = ["Factory"]

R = TypeVar("R", bound=NatsRecorder)


class Factory(InfrastructureFactory[NatsTrackingRecorder]):
    """Recorders on NATS JetStream, sharing one connection and one event-loop thread.

    Settings are read from the application's environment (see
    `angzarr_es.eventsourcing`). Closing the factory (the application does)
    ends its subscriptions, closes the connection and stops the thread.

    Raises (constructor):
        OSError: an invalid setting.
        OperationalError: NATS could not be reached, or refused the credentials.
    """

    # Topics (PERSISTENCE_MODULE, *_RECORDER_TOPIC, pickles) name the public module.
    __module__ = "angzarr_es.eventsourcing"

    aggregate_recorder_class = NatsAggregateRecorder
    application_recorder_class = NatsApplicationRecorder
    tracking_recorder_class = NatsTrackingRecorder
    process_recorder_class = NatsProcessRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        self.datastore = Datastore(read_settings(self.env))

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        return self._made(type(self).aggregate_recorder_class, purpose)

    def application_recorder(self) -> ApplicationRecorder:
        cls = self._chosen(self.APPLICATION_RECORDER_TOPIC, type(self).application_recorder_class)
        return self._made(cls)

    def tracking_recorder(
        self, tracking_recorder_class: type[NatsTrackingRecorder] | None = None
    ) -> NatsTrackingRecorder:
        cls = tracking_recorder_class or self._chosen(
            self.TRACKING_RECORDER_TOPIC, type(self).tracking_recorder_class
        )
        if not issubclass(cls, NatsTrackingRecorder):
            raise ProgrammingError(f"{cls!r} is not a NatsTrackingRecorder")
        return self._made(cls)

    def process_recorder(self) -> ProcessRecorder:
        cls = self._chosen(self.PROCESS_RECORDER_TOPIC, type(self).process_recorder_class)
        return self._made(cls)

    def close(self) -> None:
        """End the subscriptions, close the connection, stop the thread. Safe twice."""
        self.datastore.close()

    def _chosen(self, topic_key: str, default: type[R]) -> type[R]:
        """The recorder class named by `topic_key` in the environment, or `default`.

        Raises:
            ProgrammingError: the named class is not a subclass of `default`.
        """
        topic = self.env.get(topic_key)
        if not topic:
            return default
        cls = resolve_topic(topic)
        if not (isinstance(cls, type) and issubclass(cls, default)):
            raise ProgrammingError(f"{topic_key}={topic!r} is not a {default.__name__} subclass")
        return cls

    def _made(self, cls: type[R], purpose: str = "events") -> R:
        recorder = cls(self.datastore, application_name=self.env.name, purpose=purpose)
        if create_stream(self.env):
            recorder.create_table()
        return recorder
