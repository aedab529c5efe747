"""The correlation index on JetStream: which messages a correlated commit
writes, and which index entries a lookup trusts."""

from __future__ import annotations

import uuid

import msgspec
import pytest

import angzarr_es
from angzarr_es.subjects import Subjects
from tests.support import jsadmin
from tests.support.events import deposit
from tests.support.jsadmin import messages as js


async def messages(client: angzarr_es.Client) -> int:
    state = (await jsadmin.stream_info_json(client, client.config.nats.stream_name))["state"]
    return int(state["messages"])


async def index_entries(client: angzarr_es.Client) -> dict[str, int]:
    prefix = client.config.nats.subject_prefix
    reply = await jsadmin.stream_info_json(
        client, client.config.nats.stream_name, subjects_filter=f"{prefix}.correlation.>"
    )
    return dict(reply["state"].get("subjects") or {})


async def test_commits_without_a_correlation_id_are_one_message_each(
    client: angzarr_es.Client,
) -> None:
    store = client.store("player")
    for n in range(5):
        await store.append("p", [deposit(n)], expected=n)
    assert await messages(client) == 5
    assert await index_entries(client) == {}


@pytest.mark.parametrize("bad", [uuid.UUID(int=7), 42, b"wf"])
async def test_a_correlation_id_that_is_not_a_str_is_refused(
    client: angzarr_es.Client, bad: object
) -> None:
    store = client.store("player")
    with pytest.raises(TypeError, match="correlation_id must be a str"):
        await store.append("p", [deposit(1)], expected=0, correlation_id=bad)  # type: ignore[arg-type]
    assert await messages(client) == 0


async def test_a_correlated_commit_is_preceded_by_its_index_entry(
    client: angzarr_es.Client,
) -> None:
    store = client.store("player")
    res = await store.append("p", [deposit(1), deposit(2)], expected=0, correlation_id="wf.1")
    await store.append("p", [deposit(3)], expected=2)
    assert await messages(client) == 3
    prefix = client.config.nats.subject_prefix
    entry_subject = f"{prefix}.correlation.~d2YuMQ"
    assert await index_entries(client) == {entry_subject: 1}
    entry = js.msg_get(
        await jsadmin.get_message(
            client, client.config.nats.stream_name, seq=1, next_by_subj=entry_subject
        )
    ).message
    assert entry is not None
    assert entry.seq < res.stream_sequence
    assert msgspec.json.decode(entry.data) == [store.subject("p"), 0]


async def test_a_refused_correlated_commit_is_not_reported(client: angzarr_es.Client) -> None:
    store = client.store("player")
    await store.append("p", [deposit(1)], expected=0, correlation_id="wf")
    async with await angzarr_es.connect(config=client.config) as other:
        await other.store("player").append("p", [deposit(2)], expected=1, correlation_id="wf")
    assert await messages(client) == 4
    # Our cached position is stale, so the commit reaches the server, which
    # refuses it: its entry stays behind, pointing at someone else's commit.
    with pytest.raises(angzarr_es.ConcurrencyError) as info_:
        await store.append("p", [deposit(3)], expected=1, correlation_id="wf")
    assert info_.value.actual == 2
    assert await messages(client) == 5
    assert list((await index_entries(client)).values()) == [3]
    found = await client.events_by_correlation("wf")
    assert [e.sequence for e in found[("player", "p")]] == [0, 1]


async def test_entries_without_a_landed_commit_yield_nothing(client: angzarr_es.Client) -> None:
    store = client.store("player")
    entry = Subjects(client.config.nats.subject_prefix).correlation("wf")

    async def entry_alone(first_sequence: int) -> None:
        """An index entry as docs/operations.md ("Correlation") describes it,
        stored as a writer stores it before its commit."""
        payload = msgspec.json.encode([store.subject("p"), first_sequence])
        assert (await jsadmin.publish(client, entry, payload)).error is None

    # A writer that died between its entry and its commit...
    await entry_alone(0)
    assert await client.events_by_correlation("wf") == {}
    # ...and the commit that later took that slot under another workflow.
    await store.append("p", [deposit(1)], expected=0, correlation_id="other")
    assert await client.events_by_correlation("wf") == {}
    # An entry naming the right slot but a commit of another workflow.
    await entry_alone(1)
    await store.append("p", [deposit(2)], expected=1)
    assert await client.events_by_correlation("wf") == {}
    # Garbage on the index subject is skipped.
    await jsadmin.publish(client, entry, b"not an entry")
    await store.append("p", [deposit(3)], expected=2, correlation_id="wf")
    found = await client.events_by_correlation("wf")
    assert {k: [e.sequence for e in v] for k, v in found.items()} == {("player", "p"): [2]}


async def test_a_correlated_append_with_expected_any_retries_after_a_race(
    client: angzarr_es.Client,
) -> None:
    store = client.store("player")
    await store.append("p", [deposit(1)], expected=0)
    async with await angzarr_es.connect(config=client.config) as other:
        await other.store("player").append("p", [deposit(2)], expected=1)
    # Our cache still says 1: the batch is refused, re-read and retried at 2.
    res = await store.append("p", [deposit(3)], expected=angzarr_es.ANY, correlation_id="wf")
    assert (res.first_sequence, res.next_sequence) == (2, 3)
    found = await client.events_by_correlation("wf")
    assert [e.sequence for e in found[("player", "p")]] == [2]
    assert await messages(client) == 5  # three commits, two entries (one dangling)


# -- snapshots -----------------------------------------------------------------


# -- editions ------------------------------------------------------------------
