"""angzarr_es beside angzarr's own NATS bus (reproduced from its source in
`tests/support/angzarr_bus.py`) on one server, in both start orders."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

import angzarr_es
from angzarr_es.config import Config
from angzarr_es.errors import StreamConfigError
from angzarr_es.pb import player_pb2
from tests.support.angzarr_bus import AngzarrBus, AngzarrBusError, book
from tests.support.configs import with_nats
from tests.support.interop import DOMAIN, both_ways, delete_layout_streams

SUBJECTS_OVERLAP = 10065


@pytest.fixture
async def angzarr(config: Config) -> AsyncIterator[AngzarrBus]:
    """angzarr's bus on the test's prefix; the streams it made are deleted after."""
    async with await AngzarrBus.connect(config.nats.servers, config.nats.subject_prefix) as bus:
        yield bus
        await bus.delete_created()


def deposit(cents: int) -> player_pb2.FundsDeposited:
    return player_pb2.FundsDeposited(amount_cents=cents, currency="EUR")


# -- the single layout: the collision this project had ---------------------------


async def test_single_layout_first_then_angzarr_publish_fails_with_10065(
    client: angzarr_es.Client, angzarr: AngzarrBus
) -> None:
    # angzarr_es provisioned its one stream over `<p>.events.>`; angzarr's
    # get-or-create of `<P>_PLAYER` over `<p>.events.player.>` is refused.
    with pytest.raises(AngzarrBusError) as caught:
        await angzarr.publish(book("player", uuid.uuid4(), 0, [deposit(1)]))
    assert caught.value.err_code == SUBJECTS_OVERLAP
    assert angzarr.created == []


async def test_single_layout_after_angzarr_cannot_provision(
    config: Config, angzarr: AngzarrBus
) -> None:
    await angzarr.publish(book("player", uuid.uuid4(), 0, [deposit(1)]))
    assert angzarr.created == [angzarr.stream_name("player")]
    async with await angzarr_es.connect(config=config) as client:
        # Not the raw 10065: which streams, and the setting that fixes it.
        with pytest.raises(StreamConfigError) as caught:
            await client.provision()
    assert angzarr.stream_name("player") in str(caught.value)
    assert 'stream_layout = "per-domain"' in str(caught.value)


# -- the per-domain layout: angzarr's own, in both start orders --------------------


@pytest.mark.parametrize("order", ["angzarr", "angzarr_es"])
async def test_per_domain_layout_lives_beside_angzarr_in_both_start_orders(
    config: Config, order: str
) -> None:
    cfg = with_nats(config, stream_layout="per-domain")

    async def provision(client: angzarr_es.Client) -> object:
        return await client.provision(domains=[DOMAIN])

    try:
        await both_ways(cfg, order, provision)
    finally:
        async with await angzarr_es.connect(config=cfg) as admin:
            await delete_layout_streams(admin, cfg)
