"""angzarr_es: an asyncio event store and event bus on NATS JetStream."""

from angzarr_es._types import ANY, AppendResult, Expected, History, Snapshot
from angzarr_es.client import Client, connect
from angzarr_es.codec import RecordedEvent
from angzarr_es.config import Config
from angzarr_es.errors import (
    AngzarrESError,
    AppendTooLarge,
    CodecError,
    ConcurrencyError,
    ConfigError,
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
from angzarr_es.store import EventStore

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "AngzarrESError",
    "AppendResult",
    "AppendTooLarge",
    "Client",
    "CodecError",
    "ConcurrencyError",
    "Config",
    "ConfigError",
    "EventStore",
    "Expected",
    "History",
    "InvalidAggregateId",
    "InvalidDomain",
    "InvalidEdition",
    "InvalidSnapshot",
    "PermissionDenied",
    "RecordedEvent",
    "ServerTooOld",
    "Snapshot",
    "StoreError",
    "StoreTimeout",
    "StoreUnavailable",
    "StreamConfigError",
    "connect",
]
