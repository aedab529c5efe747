"""The JetStream event store: one literal subject per aggregate, one message per commit.

_store.py        EventStore: the public store of one domain, delegating below
_append.py       the append path: positions, publish with retries, lost acks
_refusals.py     what a refused publish proves (a deposed stream leader answers too)
_keys.py         idempotency keys: the commit stored under a key, and its result
_read.py         the read path: Direct Get pages, replay, leader tail, decoding
_context.py      StoreContext (what a client's stores share), position lookups
_commits.py      decoding a page of commits into events
_typed.py        typed views of a commit's events
_cache.py        the position cache, and the turns of `expected=ANY` appends
_hot.py          the hot-aggregate cache: decoded histories, one request per cached load
_snapshots.py    the snapshot stream
_correlation.py  the correlation index
_editions.py     deleting an edition
_discovery.py    listing aggregates and domains
"""

from angzarr_es.store._context import StoreContext
from angzarr_es.store._store import EventStore

__all__ = ["EventStore", "StoreContext"]
