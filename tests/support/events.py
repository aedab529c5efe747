"""Events the tests append."""

from __future__ import annotations

from angzarr_es.pb import player_pb2


def deposit(cents: int, currency: str = "EUR") -> player_pb2.FundsDeposited:
    """A player's deposit of `cents` (the amount is what tests tell events apart by)."""
    return player_pb2.FundsDeposited(amount_cents=cents, currency=currency)
