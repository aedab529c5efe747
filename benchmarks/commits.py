"""The event every benchmark writes."""

from __future__ import annotations

from angzarr_es.pb import player_pb2


def event(i: int = 0) -> player_pb2.FundsDeposited:
    return player_pb2.FundsDeposited(amount_cents=100 + i, currency="EUR")
