"""angzarr_es: an asyncio event store and event bus on NATS JetStream."""

from angzarr_es import filters as filters
from angzarr_es._types import ANY, AppendResult, Expected, History, Snapshot
from angzarr_es.bus import Bus, CatchUp, Delivery, Subscription
from angzarr_es.client import Client, connect
from angzarr_es.codec import RecordedEvent
from angzarr_es.config import Config
from angzarr_es.errors import (
    AngzarrESError,
    AppendTooLarge,
    CodecError,
    ConcurrencyError,
    ConfigError,
    ConsumerConfigError,
    InvalidAggregateId,
    InvalidDomain,
    InvalidEdition,
    InvalidSnapshot,
    PermissionDenied,
    ServerTooOld,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    StreamConfigError,
)
from angzarr_es.projector import Projector, ProjectorStats
from angzarr_es.store import EventStore

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "AngzarrESError",
    "AppendResult",
    "AppendTooLarge",
    "Bus",
    "CatchUp",
    "Client",
    "CodecError",
    "ConcurrencyError",
    "Config",
    "ConfigError",
    "ConsumerConfigError",
    "Delivery",
    "EventStore",
    "Expected",
    "History",
    "InvalidAggregateId",
    "InvalidDomain",
    "InvalidEdition",
    "InvalidSnapshot",
    "PermissionDenied",
    "Projector",
    "ProjectorStats",
    "RecordedEvent",
    "ServerTooOld",
    "Snapshot",
    "StoreError",
    "StoreTimeout",
    "StoreUnavailable",
    "StreamConfigError",
    "Subscription",
    "connect",
]
