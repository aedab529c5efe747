"""The tests' one door into the library's internals.

Tests outside `tests/support` touch no private attribute, and outside
`tests/unit` import no private module but in the files listed there with their
reason (`tests/unit/test_test_rules.py` checks both). What they need of the
implementation, to inject a fault where it happens or to see what only the
implementation knows, comes from here, named after what it is for; a rename
inside the package changes this file, not the tests.

    context(client|store)   the StoreContext a client's stores share: the
                            position cache, the hot cache, per-subject turns
    leader_next_sequence(store, root)
                            a position read from the stream leader
    subscription_count(c)   how many subscriptions the client's connection holds
    in_hand(projector) ...  a projector's unsettled deliveries, handler tasks,
                            stop state
    break_catch_up(sub)     make a catch-up remake its consumer, as a lost
                            consumer or a stall would
    pending_replies(mux) .. the seam's own state: unanswered requests, the
                            reply inbox, the parser
    loop_thread, ready_event
                            threads elsewhere: the eventsourcing loop, the
                            embedded server's log reader

What a user can see is read through the public API instead (`client.connected`,
`client.max_payload`, `client.cache_stats`, `projector.stats`), and what a
user may set through settings and keywords (`[bus.nats] deposed_leader_wait`,
`stream_discovery_interval`, `connect(clock=...)`); what stays here
is private for the reasons docs/design.md gives ("How the tests reach the
implementation").

Admin requests of the tests' own (streams, consumers, raw messages) go
through `jsadmin`, on a connection of their own, never through these.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

from nats.aio.client import Client as NatsClient

from angzarr_es import Client, EventStore, Projector
from angzarr_es._nats import Wire
from angzarr_es._nats.connection import FastClient
from angzarr_es._nats.mux import Mux
from angzarr_es._nats.parser import FastParser
from angzarr_es.bus import CatchUp
from angzarr_es.bus._inhand import InHand
from angzarr_es.embedded import EmbeddedServer
from angzarr_es.store import StoreContext
from angzarr_es.store._context import leader_position as _leader_position

if TYPE_CHECKING:  # an optional extra: importing it here would need it installed
    from angzarr_es.eventsourcing import Factory


def context(owner: Client | EventStore) -> StoreContext:
    """What the stores of a client share (a store's is its client's)."""
    return owner._ctx


async def leader_next_sequence(store: EventStore, root: str) -> int:
    """The aggregate's next sequence as the stream leader reports it (one
    request, remembered in the position cache as the store's own reads are)."""
    return (await _leader_position(store._ctx, store.subject(root))).next_sequence


def subscription_count(client: Client) -> int:
    """How many subscriptions the client's connection holds (leak checks)."""
    return len(client._wire.nc._subs)


# -- projectors and catch-ups ------------------------------------------------------


def in_hand(projector: Projector) -> InHand:
    """The deliveries a projector took and has not settled, by stream sequence."""
    return projector._in_hand


def handler_tasks(projector: Projector) -> set[asyncio.Task[None]]:
    """The projector's handler tasks not yet finished."""
    return projector._tasks


def handlers_running(projector: Projector) -> int:
    """How many handler calls are under way."""
    return projector._running


def stopping(projector: Projector) -> bool:
    """Whether a stop is under way."""
    return projector._stopping


def break_catch_up(sub: CatchUp) -> None:
    """Make `sub` remake its consumer on its next read."""
    sub._broken = True


# -- the seam itself -------------------------------------------------------------------


def pending_replies(mux: Mux) -> int:
    """Requests the mux still waits an answer for."""
    return len(mux._replies)


def inbox_served_directly(wire: Wire) -> bool:
    """Whether the mux's reply inbox is read straight from the parser."""
    sub, nc = wire.mux._inbox_sub, wire.nc
    return isinstance(nc, FastClient) and sub is not None and sub._id in nc.direct


def parser(nc: NatsClient) -> FastParser:
    """The parser a connection reads with (`FastParser` on our connections)."""
    assert isinstance(nc, FastClient)
    return nc._ps


def line_prefix(parser: FastParser) -> bytes:
    """The MSG line prefix the parser remembers from the last batch reply."""
    return parser._prefix


def stream_reader(client: Client) -> object:
    """The asyncio stream reader of the client's socket (replaced on each reconnect)."""
    return client._wire.nc._transport._io_reader  # type: ignore[union-attr]


# -- elsewhere in the package ----------------------------------------------------------


def loop_thread(factory: Factory) -> threading.Thread:
    """The thread the eventsourcing factory's loop runs on."""
    return factory.datastore.bridge._thread


def ready_event(server: EmbeddedServer) -> threading.Event:
    """Set by the embedded server's log reader once the server is ready."""
    return server._ready
