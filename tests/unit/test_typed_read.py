"""Typed views of a commit (`_typed`) and the guessing read loop (`_commits`)
give exactly what decoding every plain EventBook gives."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from angzarr_es import codec
from angzarr_es.codec import RecordedEvent
from angzarr_es.errors import CodecError
from angzarr_es.pb import core_pb2, player_pb2
from angzarr_es.store import _commits, _typed
from tests.unit.test_codec_fastpaths import fill_page, reference_recorded

NOW = dt.datetime(2026, 11, 26, 6, 0, 0, 123456, tzinfo=dt.UTC)
KINDS = ["deposit", "withdraw", "register", "unknown"]
# Pages angzarr writes besides plain events, and events under the "/" prefix.
ODD = ["deposit/", "claim", "pending", "pending-claim", "empty"]


def event_of(kind: str, n: int) -> Message:
    if kind == "deposit":
        return player_pb2.FundsDeposited(amount_cents=n, currency="EUR")
    if kind == "withdraw":
        return player_pb2.FundsWithdrawn(amount_cents=n)
    return player_pb2.PlayerRegistered(name=f"p{n}")


def packed(kind: str, n: int) -> any_pb2.Any:
    if kind == "unknown":
        raw = any_pb2.Any(type_url="/not.known.Here", value=b"\x08\x01")
        return raw
    return codec.pack(event_of(kind, n))


def commit(first: int, kinds: list[str], stamps: list[int] | None = None) -> bytes:
    payload = codec.encode_commit(
        domain="player",
        root=b"\x02" * 16,
        first_sequence=first,
        events=[packed("deposit" if k in ODD else k, first + i) for i, k in enumerate(kinds)],
        correlation_id="corr" if first % 2 else "",
        created_at=NOW + dt.timedelta(seconds=first),
    )
    if stamps is None and not set(kinds) & set(ODD):
        return payload
    book = core_pb2.EventBook.FromString(payload)
    for i, (page, kind) in enumerate(zip(book.pages, kinds, strict=True)):
        if stamps is not None:
            page.created_at.seconds += stamps[i]
        if kind in ODD:
            page.ClearField("event")
            fill_page(page, kind, first + i)
    return book.SerializeToString()


def reference(payloads: list[bytes], lo: int, hi: int | None) -> list[RecordedEvent]:
    out: list[RecordedEvent] = []
    for payload in payloads:
        out.extend(reference_recorded(core_pb2.EventBook.FromString(payload), lo, hi))
    return out


def decode(
    payloads: list[bytes], lo: int, hi: int | None, guess: _commits.Guess
) -> list[RecordedEvent]:
    out: list[RecordedEvent] = []
    scan = _commits.Scan(guess=guess)
    _commits.decode_commits("s", payloads, lo, hi, scan, out)
    return out


@st.composite
def histories(draw: st.DrawFn) -> list[bytes]:
    """Dense commits of 1-6 events, of one type or mixed, mostly with one
    timestamp; some with one of angzarr's pages without a committed event."""
    payloads = []
    seq = 0
    for _ in range(draw(st.integers(1, 12))):
        size = draw(st.integers(1, 6))
        if draw(st.booleans()):
            kinds = [draw(st.sampled_from(KINDS))] * size
        else:
            kinds = draw(st.lists(st.sampled_from(KINDS), min_size=size, max_size=size))
        if draw(st.integers(0, 3)) == 0:
            kinds[draw(st.integers(0, size - 1))] = draw(st.sampled_from(ODD))
        stamps = None
        if size > 1 and draw(st.integers(0, 4)) == 0:
            stamps = sorted(draw(st.lists(st.integers(0, 3), min_size=size, max_size=size)))
        payloads.append(commit(seq, kinds, stamps))
        seq += size
    return payloads


@settings(deadline=None, max_examples=300)
@given(
    history=histories(),
    lo=st.integers(0, 40),
    span=st.none() | st.integers(0, 30),
    warm=st.sampled_from([None, *KINDS]),
)
def test_guessing_decode_matches_plain_decoding(
    history: list[bytes], lo: int, span: int | None, warm: str | None
) -> None:
    hi = None if span is None else lo + span
    guess = _commits.Guess()
    if warm is not None:  # a guess left over from another aggregate of the domain
        guess.learn(core_pb2.EventBook.FromString(commit(0, [warm])).pages, missed=False)
    assert decode(history, lo, hi, guess) == reference(history, lo, hi)
    # And again with whatever the first pass taught the guess.
    assert decode(history, lo, hi, guess) == reference(history, lo, hi)


def test_typed_view_hands_out_the_generated_class() -> None:
    payload = commit(0, ["deposit", "deposit"])
    parse = _typed.parser_for(player_pb2.FundsDeposited)
    assert parse is not None
    book = parse(payload)
    value: object = book.pages[1].event.value
    assert type(value) is player_pb2.FundsDeposited
    assert value == player_pb2.FundsDeposited(amount_cents=1, currency="EUR")
    assert _typed.parser_for(player_pb2.FundsDeposited) is _typed.parser_for(
        player_pb2.FundsDeposited
    )


def test_events_read_through_a_typed_view_are_the_expected_type() -> None:
    guess = _commits.Guess()
    payloads = [commit(i * 3, ["deposit"] * 3) for i in range(4)]
    events = decode(payloads, 0, None, guess)
    assert guess.parse is not None
    assert guess.credit == 3
    assert [type(e.event) for e in events] == [player_pb2.FundsDeposited] * 12
    assert events == reference(payloads, 0, None)


def test_a_domain_of_mixed_commits_stops_guessing() -> None:
    guess = _commits.Guess()
    payloads = [commit(i * 2, ["register", "deposit"]) for i in range(6)]
    events = decode(payloads, 0, None, guess)
    assert events == reference(payloads, 0, None)
    assert guess.parse is None
    assert guess.cooldown > 0


def test_an_undecodable_event_of_the_guessed_type_is_reported() -> None:
    guess = _commits.Guess()
    good = commit(0, ["deposit"])
    bad_book = core_pb2.EventBook.FromString(commit(1, ["deposit"]))
    bad_book.pages[0].event.value = b"\xff\xff"  # not a FundsDeposited
    with pytest.raises(CodecError, match="does not decode"):
        decode([good, bad_book.SerializeToString()], 0, None, guess)


def test_an_event_class_from_a_pool_without_the_book_types_gets_no_typed_view() -> None:
    pool = descriptor_pool.DescriptorPool()
    proto = descriptor_pb2.FileDescriptorProto(name="own/x.proto", package="own", syntax="proto3")
    proto.message_type.add(name="Ev").field.add(
        name="n",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    pool.Add(proto)
    own = message_factory.GetMessageClass(pool.FindMessageTypeByName("own.Ev"))
    assert _typed.parser_for(own) is None
    assert _typed.parser_for(player_pb2.FundsDeposited) is not None


def test_a_type_url_that_is_not_utf8_fails_both_paths_even_outside_the_range() -> None:
    def raw_commit(seq: int, packed: bytes) -> bytes:
        page = core_pb2.EventPage()
        page.header.sequence = seq
        page.created_at.seconds = 5
        page_bytes = page.SerializeToString() + b"\x1a" + bytes([len(packed)]) + packed
        book = core_pb2.EventBook(next_sequence=seq + 1).SerializeToString()
        return book + b"\x1a" + bytes([len(page_bytes)]) + page_bytes

    good = codec.pack(player_pb2.FundsDeposited(amount_cents=1)).SerializeToString()
    bad_url = b"\x0a\x03/\xff\xfe\x12\x00"
    payloads = [raw_commit(0, good), raw_commit(1, good), raw_commit(2, bad_url)]
    for warm in (False, True):
        guess = _commits.Guess()
        if warm:
            guess.learn(core_pb2.EventBook.FromString(payloads[0]).pages, missed=False)
        with pytest.raises(_commits.Corrupt, match="UTF-8"):
            decode(payloads, 3, None, guess)


def test_events_that_are_any_messages_have_a_typed_view_of_their_own() -> None:
    """The plain view (value as bytes) is not the typed view of `Any`."""
    inner = [any_pb2.Any(type_url=f"x/y.Z{i}", value=bytes([i])) for i in range(3)]
    payloads = [
        codec.encode_commit(
            domain="player",
            root=b"\x02" * 16,
            first_sequence=i,
            events=[codec.pack(e)],
            correlation_id="",
            created_at=NOW,
        )
        for i, e in enumerate(inner)
    ]
    guess = _commits.Guess()
    assert [e.event for e in decode(payloads, 0, None, guess)] == inner
    assert guess.credit == 2  # the typed view hit twice
