"""angzarr_es beside angzarr's bus (`tests/support/angzarr_bus.py`) on a
three-server cluster, per-domain layout with R3 streams, in both start
orders: the scenario of `tests/support/interop.py` (nothing fails with
10065, angzarr's consumer decodes every angzarr_es commit, angzarr_es loads,
projects and appends after angzarr's books, nothing is lost), and the
domain's stream ends up R3 even when angzarr (which always creates R1) made it."""

from __future__ import annotations

import msgspec
import pytest

import angzarr_es
from angzarr_es.config import Config
from tests.support import jsadmin
from tests.support.cluster import Cluster, eventually
from tests.support.configs import fresh_config
from tests.support.interop import DOMAIN, both_ways


@pytest.mark.parametrize("order", ["angzarr", "angzarr_es"])
async def test_per_domain_r3_lives_beside_angzarr_in_both_start_orders(
    cluster: Cluster, order: str
) -> None:
    cluster.ensure_running()
    cfg: Config = fresh_config(
        ",".join(cluster.urls), replicas=3, request_timeout=2.0, stream_layout="per-domain"
    )
    stream = f"{cfg.nats.subject_prefix.upper()}_{DOMAIN.upper()}"
    async with await angzarr_es.connect(config=cfg) as client:

        async def meta_leader() -> bool | None:
            reply = msgspec.json.decode(await jsadmin.account_info(client))
            return None if "error" in reply else True

        await eventually(meta_leader, timeout=30, what="JetStream's meta leader")

    async def provision(client: angzarr_es.Client) -> object:
        async def done() -> bool:
            await client.provision(domains=[DOMAIN])
            return True

        await eventually(done, timeout=30, what="the per-domain streams to be provisioned")
        await cluster.wait_for_leader(client, stream, current=True)
        return None

    try:
        await both_ways(cfg, order, provision)
    finally:
        async with await angzarr_es.connect(config=cfg) as admin:
            await jsadmin.delete_layout_streams(admin, cfg)
