"""What `AppendTooLarge` tells the caller to do: one event over the server's
max_payload cannot be split, several can."""

from __future__ import annotations

import pytest

import angzarr_es
from angzarr_es.pb import player_pb2


async def test_one_event_over_max_payload_names_the_server_setting(
    client: angzarr_es.Client,
) -> None:
    limit = client.max_payload
    store = client.store("player")
    with pytest.raises(angzarr_es.AppendTooLarge) as info:
        await store.append("big", [player_pb2.FundsWithdrawn(reason="x" * 2 * limit)], expected=0)
    message = str(info.value)
    assert f"(one event) exceeds the server's max_payload of {limit} bytes" in message
    assert "one event cannot be split: raise max_payload in the nats-server configuration" in (
        message
    )
    assert "split the events over several appends" not in message

    halves = [player_pb2.FundsWithdrawn(reason="y" * (limit // 2)) for _ in range(3)]
    with pytest.raises(angzarr_es.AppendTooLarge) as info:
        await store.append("big", halves, expected=0)
    message = str(info.value)
    assert "(3 events) exceeds the server's max_payload" in message
    assert "split the events over several appends, or raise max_payload" in message
