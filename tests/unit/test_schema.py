"""angzarr's core schema: proto/ declares every field of it with angzarr's
numbers, types and oneofs, and books angzarr writes (every field set, pending
two-phase pages, claim checks) read as `RecordedEvent` documents, whichever
way the store decodes them.

The books are written with angzarr's schemas as declared by hand in
tests/support/angzarr_schema.py, never with `core_pb2`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import pytest

from angzarr_es import _codec, codec
from angzarr_es.codec import RecordedEvent
from angzarr_es.pb import core_pb2, player_pb2
from angzarr_es.store import _commits, _snapshots
from tests.support.angzarr_schema import COORDINATOR, MESSAGES, ROOT, V1, WHEN, Schema, angzarr_book


def _shape(descriptor: Any) -> dict[int, tuple[object, ...]]:
    """Each field's name, type, label, real oneof and presence, by number; a
    message or enum type by its name without the package."""
    shape: dict[int, tuple[object, ...]] = {}
    for f in descriptor.fields:
        kind = f.message_type or f.enum_type
        oneof = f.containing_oneof
        real_oneof = oneof.name if oneof is not None and not oneof.name.startswith("_") else ""
        shape[f.number] = (
            f.name,
            f.type,
            f.is_repeated,
            kind.name if kind is not None else "",
            real_oneof,
            f.has_presence,
        )
    return shape


@pytest.mark.parametrize("schema", [V1, COORDINATOR], ids=["io.angzarr.v1", "coordinator"])
@pytest.mark.parametrize("name", MESSAGES)
def test_every_field_of_angzarrs_schema_is_declared_alike(schema: Schema, name: str) -> None:
    ours = _shape(getattr(core_pb2, name).DESCRIPTOR)
    theirs = _shape(schema[name].DESCRIPTOR)
    assert {n: ours.get(n) for n in theirs} == theirs
    # Nothing of ours that neither of angzarr's schemas has.
    known = _shape(V1[name].DESCRIPTOR) | _shape(COORDINATOR[name].DESCRIPTOR)
    assert set(ours) <= set(known)


def test_enums_carry_io_angzarr_v1s_numbers() -> None:
    for enum in ("SyncMode", "SnapshotRetention", "PayloadStorageType"):
        ours = core_pb2.DESCRIPTOR.enum_types_by_name[enum]
        for value in ours.values:
            assert V1.enum(enum, value.name) == value.number


def deferred_headers(schema: Schema) -> list[Any]:
    """Page headers with each deferred sequence (commands and facts carry them
    before angzarr stamps a sequence), every field set."""
    saga = schema["PageHeader"]()
    deferred = saga.angzarr_deferred
    deferred.source.domain = "order"
    deferred.source.root.value = ROOT
    deferred.source_seq = 5
    if schema is V1:
        deferred.source_component = "fulfilment-saga"
        deferred.command_index = 2
    fact = schema["PageHeader"]()
    fact.external_deferred.external_id = "pi_1234"
    fact.external_deferred.description = "Stripe webhook"
    fact.sync_mode = schema.enum("SyncMode", "SYNC_MODE_DECISION")
    return [saga, fact]


@pytest.mark.parametrize("schema", [V1, COORDINATOR], ids=["io.angzarr.v1", "coordinator"])
def test_a_book_with_every_field_survives_our_parse_unchanged(schema: Schema) -> None:
    payload = angzarr_book(schema)
    ours = core_pb2.EventBook.FromString(payload)
    assert ours.SerializeToString() == payload
    assert ours.cover.edition.divergences[0].sequence == 7
    if schema is V1:
        assert ours.cover.ext.type_url == f"type.googleapis.com/{schema.package}.Cover"
        assert core_pb2.Cover.FromString(ours.cover.ext.value).domain == "table"
    # The number survives; its name is io.angzarr.v1's (the coordinator's
    # CASCADE = 2 is v1's SIMPLE: angzarr renumbered the enum).
    assert ours.pages[0].header.sync_mode == schema.enum("SyncMode", "SYNC_MODE_CASCADE")
    assert ours.pages[1].external.uri == "s3://payloads/abc.bin"
    for header in deferred_headers(schema):
        data = header.SerializeToString()
        ours_header = core_pb2.PageHeader.FromString(data)
        assert ours_header.SerializeToString() == data
        assert ours_header.WhichOneof("sequence_type") == header.WhichOneof("sequence_type")


def _routes(payloads: list[bytes]) -> dict[str, list[RecordedEvent]]:
    """The events of `payloads` read every way the store reads commits."""
    got: dict[str, list[RecordedEvent]] = {"recorded": []}
    for payload in payloads:
        got["recorded"] += _codec.recorded(codec.decode_book(payload))
    for route in ("plain", "typed"):
        guess = _commits.Guess()
        if route == "typed":  # the last event decoded was a FundsDeposited
            warm = codec.encode_commit(
                domain="player",
                root=ROOT,
                first_sequence=0,
                events=[codec.pack(player_pb2.FundsDeposited())],
                correlation_id="",
                created_at=WHEN,
            )
            guess.learn(core_pb2.EventBook.FromString(warm).pages, missed=False)
            assert guess.parse is not None
        out: list[RecordedEvent] = []
        _commits.decode_commits("s", payloads, 0, None, _commits.Scan(guess=guess), out)
        got[route] = out
    return got


def test_angzarrs_pages_read_as_events_or_stand_ins() -> None:
    for route, events in _routes([angzarr_book(COORDINATOR)]).items():
        first, claim, pending, last = events
        assert [e.sequence for e in events] == [0, 1, 2, 3], route
        assert first.event == player_pb2.FundsDeposited(amount_cents=1)
        assert (first.pending, first.external) == (False, None)
        assert first.created_at == WHEN
        assert first.correlation_id == "wf-1"

        assert claim.type_name == "angzarr_es.core.PayloadReference"
        assert isinstance(claim.event, core_pb2.PayloadReference)
        assert claim.external is claim.event
        assert claim.external.uri == "s3://payloads/abc.bin"
        assert claim.external.original_size == 300_000
        assert not claim.pending

        assert pending.pending, route
        assert pending.type_name == "angzarr_es.core.EventPage"
        assert isinstance(pending.event, core_pb2.EventPage)
        assert pending.event.cascade_id == "cascade-9"
        assert codec.unpack(pending.event.event) == player_pb2.FundsDeposited(amount_cents=3)
        assert pending.external is None

        assert last.event == player_pb2.FundsDeposited(amount_cents=4)  # committed
        assert not last.pending


def test_io_angzarr_v1_books_read_alike_every_way() -> None:
    routes = _routes([angzarr_book(V1)])
    assert routes["plain"] == routes["recorded"] == routes["typed"]
    assert [e.type_name for e in routes["plain"]] == [
        "examples.player.FundsDeposited",
        "angzarr_es.core.PayloadReference",
        "examples.player.FundsDeposited",
        "examples.player.FundsDeposited",
    ]


def _commit(first: int, amounts: list[int], *, pending: Collection[int] = ()) -> bytes:
    """A commit of deposits as angzarr's coordinator writes it, one timestamp."""
    book = COORDINATOR["EventBook"]()
    for i, amount in enumerate(amounts):
        page = book.pages.add()
        page.header.sequence = first + i
        page.created_at.FromDatetime(WHEN)
        page.event.Pack(player_pb2.FundsDeposited(amount_cents=amount))
        if first + i in pending:
            page.no_commit = True
            page.cascade_id = "c"
    book.next_sequence = first + len(amounts)
    return book.SerializeToString()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "pending",
    [{3}, {2, 3, 4}, {4}],
    ids=["single-page-commit", "whole-commit", "inside-a-commit"],
)
def test_a_pending_page_is_never_read_as_committed(pending: set[int]) -> None:
    """Uniform commits of one type: the typed view's guess hits on the first."""
    payloads = [_commit(0, [0, 1]), _commit(2, [2]), _commit(3, [3])]
    if pending != {3}:
        payloads = [_commit(0, [0, 1]), _commit(2, [2, 3, 4], pending=pending)]
    else:
        payloads[2] = _commit(3, [3], pending=pending)
    for route, events in _routes(payloads).items():
        assert [e.sequence for e in events] == list(range(len(events)))
        assert {e.sequence for e in events if e.pending} == pending, route
        for e in events:
            if not e.pending:
                assert e.event == player_pb2.FundsDeposited(amount_cents=e.sequence)


def test_one_type_under_two_type_url_prefixes_stays_on_the_typed_path() -> None:
    old = codec.pack(player_pb2.FundsDeposited(amount_cents=0), "/")
    new = codec.pack(player_pb2.FundsDeposited(amount_cents=1))
    payloads = [
        codec.encode_commit(
            domain="player",
            root=ROOT,
            first_sequence=i,
            events=[old if i % 2 == 0 else new],
            correlation_id="",
            created_at=WHEN,
        )
        for i in range(8)
    ]
    guess = _commits.Guess()
    out: list[RecordedEvent] = []
    _commits.decode_commits("s", payloads, 0, None, _commits.Scan(guess=guess), out)
    assert [e.type_name for e in out] == ["examples.player.FundsDeposited"] * 8
    assert guess.parse is not None
    assert guess.credit == 7  # every commit after the first one was a hit


def test_an_io_angzarr_v1_snapshot_reads_with_retention_and_created_at() -> None:
    snap = V1["Snapshot"](sequence=4)
    snap.retention = V1.enum("SnapshotRetention", "RETENTION_PERSIST")
    snap.state.Pack(player_pb2.PlayerState(name="Ann"))
    snap.created_at.FromDatetime(WHEN)
    record = _snapshots.decode(snap.SerializeToString(), "s")
    assert record.sequence == 4
    assert record.state == player_pb2.PlayerState(name="Ann")
    assert record.retention == core_pb2.RETENTION_PERSIST
    assert record.created_at == WHEN


def test_a_coordinator_snapshot_has_no_created_at() -> None:
    snap = COORDINATOR["Snapshot"](sequence=1)
    snap.state.Pack(player_pb2.PlayerState(name="Ann"))
    record = _snapshots.decode(snap.SerializeToString(), "s")
    assert (record.retention, record.created_at) == (core_pb2.RETENTION_DEFAULT, None)
