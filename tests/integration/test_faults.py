"""angzarr_es.testing.faults on a real server: one interception per client,
gone when its block is left, the documented example, statuses to pulls."""

from __future__ import annotations

import uuid

import pytest

import angzarr_es
from angzarr_es import StoreTimeout
from angzarr_es.testing import faults
from angzarr_es.testing.faults import Forward, Reply, Request
from tests.support.events import deposit


async def test_one_interception_per_client_and_none_after_the_block(
    client: angzarr_es.Client,
) -> None:
    seen: list[str] = []

    async def note(request: Request, forward: Forward) -> Reply:
        seen.append(request.what)
        return await forward(request)

    store = client.store("player")
    with faults.intercept(client, on_request=note):
        with (
            pytest.raises(RuntimeError, match="intercepted already"),
            faults.intercept(client, on_request=note),
        ):
            pass
        await store.append("a", [deposit(1)], expected=0)  # the first still in place
    assert seen == ["append to " + store.subject("a")]
    await store.append("a", [deposit(2)], expected=1)
    assert len(seen) == 1


async def test_the_documented_lost_ack(client: angzarr_es.Client) -> None:
    """docs/operations.md "Testing against faults on the wire"."""
    store, pid = client.store("player"), uuid.uuid4()

    async def lose_first_ack(request: Request, forward: Forward) -> Reply:
        reply = await forward(request)  # the commit is stored ...
        if faults.operation(request) == "" and not lost:
            lost.append(request.subject)
            raise StoreTimeout(f"{request.what}: ack lost")  # ... its ack never arrives
        return reply

    lost: list[str] = []
    with faults.intercept(client, on_request=lose_first_ack):
        result = await store.append(pid, [deposit(1)], expected=0)
    assert lost == [store.subject(pid)]
    assert (result.first_sequence, result.next_sequence) == (0, 1)
    assert [e.sequence for e in (await store.load(pid)).events] == [0]


async def test_a_status_to_no_open_pull_reaches_nobody(client: angzarr_es.Client) -> None:
    assert await faults.pull_status(client, "nobody", "409", "Consumer Deleted") == 0
