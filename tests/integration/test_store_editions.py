"""Editions on JetStream: where their commits land, deleting them, and other
processes that held them."""

from __future__ import annotations

import msgspec
import pytest

import angzarr_es
from tests.support import jsadmin
from tests.support.events import deposit


async def test_deleting_an_edition_without_its_snapshot_stream_deletes_nothing(
    client: angzarr_es.Client,
) -> None:
    """Events were purged first, then the missing snapshot stream failed the
    call: the edition was left half deleted (a review)."""
    await client.provision()
    what_if = client.store("player", edition="what-if")
    await what_if.append("x", [deposit(1)], expected=0)
    cfg = client.config.nats
    await jsadmin.delete_stream(client, cfg.snapshot_stream)
    with pytest.raises(angzarr_es.StoreError, match="provision"):
        await client.delete_edition("what-if")
    assert [e.sequence for e in (await what_if.load("x")).events] == [0]


async def test_edition_commits_are_outside_the_main_timeline_filter(
    client: angzarr_es.Client,
) -> None:
    nats = client.config.nats
    await client.store("player").append("p", [deposit(1)], expected=0)
    await client.store("player", "what-if").append("p", [deposit(2)], expected=0)
    main = await jsadmin.stream_info_json(
        client, nats.stream_name, subjects_filter=f"{nats.subject_prefix}.events.player.*"
    )
    assert list(main["state"]["subjects"]) == [f"{nats.subject_prefix}.events.player.p"]
    everything = await jsadmin.stream_info_json(
        client, nats.stream_name, subjects_filter=f"{nats.subject_prefix}.events.player.>"
    )
    assert sorted(everything["state"]["subjects"]) == [
        f"{nats.subject_prefix}.events.player.p",
        f"{nats.subject_prefix}.events.player.p.what-if",
    ]
    hist = await client.store("player", "what-if").load("p")
    assert [e.event for e in hist.events] == [deposit(2)]


async def test_the_event_stream_denies_deletes_but_allows_the_edition_purge(
    client: angzarr_es.Client,
) -> None:
    cfg = (await jsadmin.stream_info_json(client, client.config.nats.stream_name))["config"]
    assert cfg["deny_delete"] is True
    assert cfg.get("deny_purge", False) is False
    nats = client.config.nats
    await client.store("player", "x").append("p", [deposit(1)], expected=0)
    reply = msgspec.json.decode(await jsadmin.delete_message(client, nats.stream_name, 1))
    assert reply["error"]["code"] >= 400
    assert await client.delete_edition("x") == 1


async def test_another_process_recovers_after_an_edition_is_deleted(
    client: angzarr_es.Client,
) -> None:
    async with await angzarr_es.connect(config=client.config) as other:
        theirs = other.store("player", "what-if")
        await theirs.append("p", [deposit(1), deposit(2)], expected=0)
        assert await theirs.next_sequence("p") == 2  # their cache is warm
        assert await client.delete_edition("what-if") == 1
        hist = await theirs.load("p")
        assert (hist.events, hist.next_sequence) == ([], 0)
        assert await theirs.next_sequence("p") == 0
        res = await theirs.append("p", [deposit(3)], expected=0)
        assert (res.first_sequence, res.next_sequence) == (0, 1)
        assert [e.event for e in (await theirs.load("p")).events] == [deposit(3)]
