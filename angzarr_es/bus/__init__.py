"""The event bus: commits as EventBooks on `<prefix>.events.<domain>.<root>`.

Two modes, chosen by `[bus.nats] jetstream`:

- JetStream (default): every committed `append` already is the bus event: the
  stream stores the EventBook message and NATS routes the same message to
  subscribers. There is no second write. Subscriptions and projectors read
  through consumers and see stream sequences and delivery counts.
- Core (`jetstream = false`): `bus.publish(book)` sends the EventBook with a
  plain NATS publish: at most once, lowest latency, no stream. Subscribers
  receive it only while connected. A core subscription sees every publish on
  its subjects, including an append the event stream then refuses.

    _delivery.py    Delivery and its decoding, Handler, Start (shared by all below)
    _core.py        Bus: core publish, live subscriptions, provisioning
    _catchup.py     CatchUp: replay from a start, then follow
    _settings.py    ProjectorSettings, ProjectorStats, the durable consumer's config
    _deadletter.py  the dead-letter stream and what goes into it
    _ordering.py    per-aggregate order of a projector's commits
    _inhand.py      a projector's deliveries in hand, and who settles each
    _feed.py        a projector's pull requests, and what the server's statuses say
    _settle.py      what a delivery becomes: ack, retry after backoff, dead letter
    _projector.py   Projector: the pull loop, handlers, stop
    _owned.py       what a client made, stopped together when it closes
"""

from angzarr_es.bus._catchup import CatchUp
from angzarr_es.bus._core import Bus, Subscription
from angzarr_es.bus._deadletter import (
    H_DELIVERIES,
    H_ERROR,
    H_PROJECTOR,
    H_STREAM,
    H_STREAM_SEQ,
    H_SUBJECT,
)
from angzarr_es.bus._delivery import Delivery, Handler, SkipHandler, Start
from angzarr_es.bus._projector import Projector
from angzarr_es.bus._settings import ProjectorSettings, ProjectorStats

__all__ = [
    "H_DELIVERIES",
    "H_ERROR",
    "H_PROJECTOR",
    "H_STREAM",
    "H_STREAM_SEQ",
    "H_SUBJECT",
    "Bus",
    "CatchUp",
    "Delivery",
    "Handler",
    "Projector",
    "ProjectorSettings",
    "ProjectorStats",
    "SkipHandler",
    "Start",
    "Subscription",
]
