"""Commits angzarr's bus wrote are first-class: loads, iteration, appends after
them, projectors and subscriptions read the books it publishes on the
aggregate's one subject (all editions together), and a book out of sequence
is an error naming where it is. In both layouts: angzarr's own (per-domain,
where its bus makes its streams as it does) and the single one (where its
books are published on the stream that captures them)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

import angzarr_es
from angzarr_es import ANY, CodecError, ConcurrencyError, Delivery, filters
from angzarr_es.config import Config
from angzarr_es.pb import core_pb2, player_pb2
from tests.support import jsadmin
from tests.support.angzarr_bus import AngzarrBus, book
from tests.support.bus import WAIT, Recorder
from tests.support.configs import with_nats

DOMAIN = "player"


@pytest.fixture(params=["per-domain", "single"])
def config(config: Config, request: pytest.FixtureRequest) -> Config:
    return with_nats(config, stream_layout=request.param)


@pytest.fixture
async def client(config: Config) -> AsyncIterator[angzarr_es.Client]:
    async with await angzarr_es.connect(config=config) as c:
        await c.provision(domains=[DOMAIN])
        yield c
    async with await angzarr_es.connect(config=config) as admin:
        if config.nats.stream_layout == "single":
            for name in (config.nats.stream_name, config.nats.snapshot_stream):
                await jsadmin.delete_stream(admin, name)
        else:
            await jsadmin.delete_layout_streams(admin, config)


@pytest.fixture
async def angzarr(config: Config) -> AsyncIterator[AngzarrBus]:
    async with await AngzarrBus.connect(config.nats.servers, config.nats.subject_prefix) as bus:
        # The single layout's stream captures angzarr's subjects: its own
        # stream create would be refused (test_angzarr_interop.py).
        bus.ensure = config.nats.stream_layout == "per-domain"
        yield bus
        await bus.delete_created()


def deposit(cents: int) -> player_pb2.FundsDeposited:
    return player_pb2.FundsDeposited(amount_cents=cents, currency="EUR")


async def publish(
    bus: AngzarrBus, root: uuid.UUID, first: int, cents: list[int], **cover: object
) -> int:
    """angzarr's bus publishing one book."""
    made = book(DOMAIN, root, first, [deposit(c) for c in cents], **cover)  # type: ignore[arg-type]
    return await bus.publish(made)


def amounts(events: list[angzarr_es.RecordedEvent]) -> list[int]:
    return [e.event.amount_cents for e in events]  # type: ignore[attr-defined]


async def test_load_and_iter_read_books_angzarr_published(
    client: angzarr_es.Client, angzarr: AngzarrBus
) -> None:
    root = uuid.uuid4()
    # The main timeline as angzarr names it: no edition, "angzarr", or "".
    await publish(angzarr, root, 0, [1, 2], correlation_id="wf-1", edition=None)
    await publish(angzarr, root, 2, [3], edition="angzarr", next_sequence=True)
    await publish(angzarr, root, 3, [4])
    store = client.store(DOMAIN)
    history = await store.load(root)
    assert amounts(history.events) == [1, 2, 3, 4]
    assert [e.sequence for e in history.events] == [0, 1, 2, 3]
    assert history.events[0].type_name == "examples.player.FundsDeposited"
    assert history.events[0].correlation_id == "wf-1"
    assert history.next_sequence == 4
    assert amounts([e async for e in store.iter(root)]) == [1, 2, 3, 4]
    client.clear_cache()
    assert amounts((await store.load(str(root), from_sequence=2)).events) == [3, 4]


async def test_other_editions_on_the_shared_subject_are_passed_over(
    client: angzarr_es.Client, angzarr: AngzarrBus
) -> None:
    root = uuid.uuid4()
    await publish(angzarr, root, 0, [1, 2])
    await publish(angzarr, root, 2, [50], edition="what-if")  # diverged at 2
    await publish(angzarr, root, 2, [3], edition="angzarr")
    await publish(angzarr, root, 3, [51], edition="what-if")
    store = client.store(DOMAIN)
    assert amounts((await store.load(root)).events) == [1, 2, 3]
    # The subject's last message is the edition's: the position still is
    # the main timeline's, from a process that never read the aggregate.
    async with await angzarr_es.connect(config=client.config) as other:
        assert await other.store(DOMAIN).next_sequence(root) == 3
        done = await other.store(DOMAIN).append(root, [deposit(4)], expected=3)
    assert (done.first_sequence, done.next_sequence) == (3, 4)
    assert amounts((await store.load(root)).events) == [1, 2, 3, 4]


async def test_appends_after_angzarr_books_keep_server_enforced_concurrency(
    client: angzarr_es.Client, angzarr: AngzarrBus, config: Config
) -> None:
    root = uuid.uuid4()
    await publish(angzarr, root, 0, [1])
    store = client.store(DOMAIN)
    assert (await store.load(root)).next_sequence == 1
    # angzarr writes behind this client's back: its cached position is stale,
    # and only the server's expected-last-subject-sequence check can tell.
    await publish(angzarr, root, 1, [2])
    with pytest.raises(ConcurrencyError) as caught:
        await store.append(root, [deposit(9)], expected=1)
    assert caught.value.actual == 2
    # Another edition's book moves the subject, not the main timeline:
    # `expected` still holds and the append goes through.
    await publish(angzarr, root, 1, [60], edition="what-if")
    await store.append(root, [deposit(3)], expected=2)
    await publish(angzarr, root, 2, [61], edition="what-if")
    await store.append(root, [deposit(4)], expected=ANY)
    history = await store.load(root)
    assert amounts(history.events) == [1, 2, 3, 4]
    assert history.next_sequence == 4


@pytest.mark.parametrize(
    ("first", "found"),
    [(3, "events 3..3 where 2.. was due"), (1, "events 1..1 where 2.. was due")],
    ids=["gap", "duplicate"],
)
async def test_an_angzarr_book_out_of_sequence_is_a_codec_error(
    client: angzarr_es.Client, angzarr: AngzarrBus, first: int, found: str
) -> None:
    root = uuid.uuid4()
    await publish(angzarr, root, 0, [1, 2])
    store = client.store(DOMAIN)
    await store.load(root)  # the hot-aggregate cache holds it: the next loads read on
    seq = await publish(angzarr, root, first, [3])
    subject = store.subject(root)
    for warm in (True, False):
        if not warm:
            client.clear_cache()
        for read in (store.load(root), anext(aiter(store.iter(root, from_sequence=2)))):
            with pytest.raises(CodecError) as caught:
                await read
            assert caught.value.subject == subject
            assert caught.value.stream_sequence == seq
            assert found in str(caught.value)
            assert subject in str(caught.value)


async def test_projectors_and_subscriptions_receive_angzarr_books(
    client: angzarr_es.Client, angzarr: AngzarrBus
) -> None:
    root = uuid.uuid4()
    await publish(angzarr, root, 0, [1], edition="angzarr", correlation_id="wf")
    await publish(angzarr, root, 1, [70], edition="what-if")
    seen = Recorder()
    async with client.projector("interop", filters.domain(DOMAIN), seen):
        await seen.wait_count(2)
    got: list[Delivery] = list(seen.seen)
    assert [(d.root, d.edition, amounts(d.events)) for d in got] == [
        (str(root), "", [1]),
        (str(root), "what-if", [70]),
    ]
    assert got[0].events[0].correlation_id == "wf"
    assert got[0].headers.get("Angzarr-Correlation") == "wf"
    async with client.subscribe(filters.aggregate(DOMAIN, root)) as sub:
        first = await anext(aiter(sub))
    assert (first.edition, amounts(first.events)) == ("", [1])


# -- correlation: commits angzarr stamped, indexed afterwards ----------------------


async def by_correlation(
    client: angzarr_es.Client, cid: str, edition: str | None = None
) -> dict[str, list[int]]:
    found = await client.events_by_correlation(cid, edition=edition)
    return {root: amounts(events) for (_, root), events in found.items()}


async def test_events_by_correlation_finds_angzarr_commits_once_indexed(
    client: angzarr_es.Client, angzarr: AngzarrBus
) -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await publish(angzarr, a, 0, [1], correlation_id="wf")
    await publish(angzarr, a, 1, [2], correlation_id="other")
    await publish(angzarr, b, 0, [3, 4], correlation_id="wf", edition="angzarr")
    await publish(angzarr, a, 1, [80], correlation_id="wf", edition="what-if")
    # A commit carrying the id in its header only (the cover left empty).
    headers = {"Angzarr-Correlation": "wf"}
    only_header = book(DOMAIN, c, 0, [deposit(5)]).SerializeToString()
    await jsadmin.publish(client, client.store(DOMAIN).subject(c), only_header, headers)
    ours = uuid.uuid4()
    await client.store(DOMAIN).append(ours, [deposit(6)], expected=0, correlation_id="wf")
    # Before the indexer ran: only this store's own commit.
    assert await by_correlation(client, "wf") == {str(ours): [6]}
    for name in ("index", "index-again"):  # a second indexer adds nothing new
        async with client.projector(name, filters.everything(), client.index_correlation) as p:
            await p.wait(lambda s: s.handled == 6, timeout=WAIT)
    found = await by_correlation(client, "wf")
    assert found == {str(a): [1], str(b): [3, 4], str(c): [5], str(ours): [6]}
    # One entry per commit: ours had its own, the repeat was de-duplicated.
    nats = client.config.nats
    index = nats.correlation_stream
    entries = await jsadmin.stream_info_json(
        client, index, subjects_filter=f"{nats.subject_prefix}.correlation.wf"
    )
    assert entries["state"]["subjects"] == {f"{nats.subject_prefix}.correlation.wf": 5}
    found_events = await client.events_by_correlation("wf")
    assert {e.correlation_id for events in found_events.values() for e in events} == {"wf"}
    assert await by_correlation(client, "wf", edition="what-if") == {str(a): [80]}
    assert await by_correlation(client, "other") == {str(a): [2]}


# -- editions angzarr wrote on the aggregate's subject -----------------------------


async def test_an_angzarr_edition_reads_as_main_up_to_its_divergence_then_its_own(
    client: angzarr_es.Client, angzarr: AngzarrBus
) -> None:
    root = uuid.uuid4()
    await publish(angzarr, root, 0, [1, 2])
    await publish(angzarr, root, 2, [3])
    await publish(angzarr, root, 2, [30, 40], edition="what-if")  # implicit divergence: 2
    await publish(angzarr, root, 3, [4], edition="angzarr")
    await publish(angzarr, root, 4, [50], edition="what-if")
    what_if = client.store(DOMAIN, edition="what-if")
    history = await what_if.load(root)
    assert amounts(history.events) == [1, 2, 30, 40, 50]
    assert [e.sequence for e in history.events] == [0, 1, 2, 3, 4]
    assert history.next_sequence == 5
    assert amounts([e async for e in what_if.iter(root)]) == [1, 2, 30, 40, 50]
    assert amounts((await what_if.load(root, from_sequence=1, to_sequence=3)).events) == [2, 30]
    # The main timeline and an edition nobody wrote are unchanged.
    assert amounts((await client.store(DOMAIN).load(root)).events) == [1, 2, 3, 4]
    assert (await client.store(DOMAIN, edition="other").load(root)).events == []


async def test_an_angzarr_edition_out_of_sequence_is_a_codec_error(
    client: angzarr_es.Client, angzarr: AngzarrBus
) -> None:
    root = uuid.uuid4()
    await publish(angzarr, root, 0, [1, 2])
    await publish(angzarr, root, 1, [20], edition="what-if")
    seq = await publish(angzarr, root, 3, [40], edition="what-if")  # 2 is missing
    with pytest.raises(CodecError) as caught:
        await client.store(DOMAIN, edition="what-if").load(root)
    assert caught.value.stream_sequence == seq
    assert "events 3..3 where 2.. was due" in str(caught.value)


async def test_appends_to_an_angzarr_edition_are_refused_with_the_reason(
    client: angzarr_es.Client, angzarr: AngzarrBus
) -> None:
    root = uuid.uuid4()
    await publish(angzarr, root, 0, [1])
    await publish(angzarr, root, 1, [20], edition="what-if")
    what_if = client.store(DOMAIN, edition="what-if")
    for expected in (0, ANY, 2):
        with pytest.raises(angzarr_es.InvalidEdition, match="written by angzarr"):
            await what_if.append(root, [deposit(9)], expected=expected)
    assert amounts((await what_if.load(root)).events) == [1, 20]
    done = await client.store(DOMAIN, edition="mine").append(root, [deposit(7)], expected=0)
    assert done.next_sequence == 1


@pytest.mark.skipif(
    "divergences" not in core_pb2.Edition.DESCRIPTOR.fields_by_name,
    reason="the schema lacks Edition.divergences",
)
async def test_an_explicit_divergence_takes_the_main_timeline_up_to_it(
    client: angzarr_es.Client, angzarr: AngzarrBus
) -> None:
    root = uuid.uuid4()
    await publish(angzarr, root, 0, [1, 2, 3])
    # Branched at 1 for this domain (another domain's divergence is ignored);
    # its first own event is at 1.
    explicit = {"edition": "what-if", "divergences": [("hand", 0), (DOMAIN, 1)]}
    await publish(angzarr, root, 1, [20, 30], **explicit)
    history = await client.store(DOMAIN, edition="what-if").load(root)
    assert amounts(history.events) == [1, 20, 30]
    assert history.next_sequence == 3


async def test_snapshots_among_other_editions_books(
    client: angzarr_es.Client, angzarr: AngzarrBus
) -> None:
    root = uuid.uuid4()
    await publish(angzarr, root, 0, [1, 2])
    await publish(angzarr, root, 1, [20], edition="what-if")
    await publish(angzarr, root, 2, [3])
    await publish(angzarr, root, 2, [30], edition="what-if")
    await publish(angzarr, root, 3, [4])
    await publish(angzarr, root, 3, [40, 50, 60], edition="what-if")  # the last message
    store = client.store(DOMAIN)
    state = player_pb2.PlayerState(balance_cents=3)
    for sequence, after in ((1, [3, 4]), (3, []), (0, [2, 3, 4])):
        await store.save_snapshot(root, state, sequence)
        history = await store.load(root, snapshot=True)
        assert history.snapshot is not None
        assert history.snapshot.sequence == sequence
        assert amounts(history.events) == after
    # The edition reaches 5; the main timeline does not.
    for beyond in (4, 5):
        with pytest.raises(angzarr_es.InvalidSnapshot):
            await store.save_snapshot(root, state, beyond)
