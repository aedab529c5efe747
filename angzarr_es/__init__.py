"""angzarr_es: an asyncio event store and event bus on NATS JetStream.

    import angzarr_es
    async with await angzarr_es.connect() as client:   # NATS_URL, else nats://localhost:4222
        await client.provision()                       # create/update the event stream
        players = client.store("player")               # an EventStore for one domain
        await players.append(pid, [event], expected=0) # one commit; the server checks `expected`
        history = await players.load(pid)              # History(events, next_sequence)

The main entry points:

- `connect(url=None, *, config=None, observer=None) -> Client`, and
  `Config.load(path)` for the TOML file (`[bus.nats]`; `NATS_URL` and
  `BUS_BACKEND` override it).
- `Client.store(domain) -> EventStore`: `append`, `load`, `iter`,
  `next_sequence`, snapshots, `list_roots`.
- `Client.projector(...)`, `Client.subscribe(...)`, `Client.bus`: the event bus
  (durable projectors, catch-up subscriptions, core NATS).
- `Observer`: subclass it to hear of appends, loads, retries, redeliveries and
  dead letters (`metrics.StoreMetrics` is one); `connect(observer=...)` or
  `Client.observer` installs it. `Outcome` and `CacheOutcome` name what its
  hooks are told.
- `testing.InMemoryClient` / `testing.InMemoryEventStore`: the client, its
  stores and its bus without a server, for unit tests (`angzarr_es.testing`
  is loaded on first use).
- Errors derive from `AngzarrESError` (see `angzarr_es.errors`): above all
  `ConcurrencyError`, `StoreUnavailable` (nothing stored) and `StoreTimeout`
  (outcome unknown: retry with the same `idempotency_key`).

The README and docs/ of the source distribution give the details.
"""

import importlib as _importlib
import typing as _typing

from angzarr_es import filters as filters
from angzarr_es._codec import RecordedEvent
from angzarr_es._nats.messages import StreamConfig
from angzarr_es._observe import CacheOutcome, Observer, Outcome
from angzarr_es._provision import ConsumerPlan, ProvisionPlan, StreamPlan
from angzarr_es._types import ANY, AppendResult, Expected, ExpectedVersion, History, Snapshot
from angzarr_es.bus import (
    Bus,
    CatchUp,
    Delivery,
    Handler,
    Projector,
    ProjectorSettings,
    ProjectorStats,
    SkipHandler,
    Start,
    Subscription,
)
from angzarr_es.client import Client, connect
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
from angzarr_es.health import Health
from angzarr_es.store import EventStore
from angzarr_es.subjects import AggregateId

if _typing.TYPE_CHECKING:
    from angzarr_es import testing as testing

__version__ = "0.1.0"

__all__ = [
    "ANY",
    "AggregateId",
    "AngzarrESError",
    "AppendResult",
    "AppendTooLarge",
    "Bus",
    "CacheOutcome",
    "CatchUp",
    "Client",
    "CodecError",
    "ConcurrencyError",
    "Config",
    "ConfigError",
    "ConsumerConfigError",
    "ConsumerPlan",
    "Delivery",
    "EventStore",
    "Expected",
    "ExpectedVersion",
    "Handler",
    "Health",
    "History",
    "InvalidAggregateId",
    "InvalidDomain",
    "InvalidEdition",
    "InvalidSnapshot",
    "Observer",
    "Outcome",
    "PermissionDenied",
    "Projector",
    "ProjectorSettings",
    "ProjectorStats",
    "ProvisionPlan",
    "RecordedEvent",
    "ServerTooOld",
    "SkipHandler",
    "Snapshot",
    "Start",
    "StoreError",
    "StoreTimeout",
    "StoreUnavailable",
    "StreamConfig",
    "StreamConfigError",
    "StreamPlan",
    "Subscription",
    "connect",
]


def __getattr__(name: str) -> object:
    # `angzarr_es.testing` after a plain `import angzarr_es`, as the README
    # writes it, without loading the test doubles into every application.
    if name == "testing":
        return _importlib.import_module("angzarr_es.testing")
    raise AttributeError(f"module 'angzarr_es' has no attribute {name!r}")
