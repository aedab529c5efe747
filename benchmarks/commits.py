"""The event every benchmark writes, and commits encoded as the store encodes them
(for the baselines, which write without a store)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from google.protobuf.message import Message

from angzarr_es import codec
from angzarr_es.pb import player_pb2


def event(i: int = 0) -> player_pb2.FundsDeposited:
    return player_pb2.FundsDeposited(amount_cents=100 + i, currency="EUR")


def commit(
    domain: str, root: bytes, first: int, events: Iterable[Message], correlation_id: str = ""
) -> bytes:
    """One commit's payload: `events` from sequence `first`, stamped now."""
    return codec.encode_commit(
        domain=domain,
        root=root,
        first_sequence=first,
        events=[codec.pack(e) for e in events],
        correlation_id=correlation_id,
        created_at=dt.datetime.now(dt.UTC),
    )
