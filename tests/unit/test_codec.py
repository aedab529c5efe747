"""EventBook encoding round trips and unknown types."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from hypothesis import given
from hypothesis import strategies as st

from angzarr_es import CodecError, _codec
from angzarr_es.pb import core_pb2, player_pb2


@given(
    st.integers(min_value=0, max_value=2**31),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=20),
    st.text(max_size=50),
    st.datetimes(
        min_value=dt.datetime(1970, 1, 1),
        max_value=dt.datetime(2200, 1, 1),
        timezones=st.just(dt.UTC),
    ),
)
def test_commit_round_trip(first: int, amounts: list[int], corr: str, when: dt.datetime) -> None:
    events = [player_pb2.FundsDeposited(amount_cents=a) for a in amounts]
    payload = _codec.encode_commit(
        domain="player",
        root=b"r",
        first_sequence=first,
        events=[_codec.pack(e) for e in events],
        correlation_id=corr,
        created_at=when,
    )
    book = _codec.decode_book(payload)
    assert book.cover.domain == "player"
    assert book.next_sequence == first + len(events)
    out = _codec.recorded(book)
    assert [r.sequence for r in out] == list(range(first, first + len(events)))
    assert [r.event for r in out] == events
    assert all(r.correlation_id == corr for r in out)
    assert all(r.created_at == when for r in out)


def test_type_url_defaults_to_what_any_pack_writes() -> None:
    event = player_pb2.PlayerRegistered(name="x")
    packed = _codec.pack(event)
    assert packed.type_url == "type.googleapis.com/examples.player.PlayerRegistered"
    reference = any_pb2.Any()
    reference.Pack(event)
    assert packed == reference


@pytest.mark.parametrize("prefix", ["/", "type.example.com/angzarr/"])
def test_type_url_prefix_is_the_callers(prefix: str) -> None:
    packed = _codec.pack(player_pb2.PlayerRegistered(name="x"), prefix)
    assert packed.type_url == prefix + "examples.player.PlayerRegistered"
    assert _codec.unpack(packed) == player_pb2.PlayerRegistered(name="x")


@pytest.mark.parametrize("prefix", ["", "type.googleapis.com", "/x"])
def test_a_type_url_prefix_without_a_final_slash_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="must end with '/'"):
        _codec.pack(player_pb2.PlayerRegistered(name="x"), prefix)


@pytest.mark.parametrize(
    "url",
    [
        "type.googleapis.com/examples.player.PlayerRegistered",
        "/examples.player.PlayerRegistered",
        "type.angzarr.io/examples.player.PlayerRegistered",
        "x/y/examples.player.PlayerRegistered",
        "examples.player.PlayerRegistered",
    ],
)
def test_any_prefix_before_the_last_slash_is_accepted(url: str) -> None:
    packed = any_pb2.Any(
        type_url=url, value=player_pb2.PlayerRegistered(name="n").SerializeToString()
    )
    assert _codec.unpack(packed) == player_pb2.PlayerRegistered(name="n")


def test_unknown_types_stay_raw() -> None:
    packed = any_pb2.Any(type_url="/nope.Nothing", value=b"\x01")
    assert _codec.unpack(packed) is packed


def test_bytes_that_do_not_parse_as_the_named_type_raise() -> None:
    packed = any_pb2.Any(type_url="/examples.player.PlayerRegistered", value=b"\xff\xff")
    with pytest.raises(CodecError):
        _codec.unpack(packed)


def test_corrupt_book_names_subject_and_sequence() -> None:
    with pytest.raises(CodecError) as info:
        _codec.decode_book(b"\xff\xff", subject="a.b", stream_sequence=7)
    assert (info.value.subject, info.value.stream_sequence) == ("a.b", 7)


def test_pages_without_next_sequence_are_understood() -> None:
    book = core_pb2.EventBook()
    for seq in (4, 5):
        book.pages.add().header.sequence = seq
    assert _codec.commit_span(book, subject="a.b", stream_sequence=7) == (4, 6)
    book.next_sequence = 6
    assert _codec.commit_span(book, subject="a.b", stream_sequence=7) == (4, 6)


@pytest.mark.parametrize(
    ("sequences", "nxt"),
    [((), 0), ((), 3), ((4, 6), 0), ((4, 5), 5), ((4, 5), 9)],
    ids=["empty", "empty-with-next", "gap", "next-behind", "next-ahead"],
)
def test_a_book_that_is_not_a_commit_has_no_span(sequences: tuple[int, ...], nxt: int) -> None:
    book = core_pb2.EventBook(next_sequence=nxt)
    for seq in sequences:
        book.pages.add().header.sequence = seq
    with pytest.raises(CodecError) as info:
        _codec.commit_span(book, subject="a.b", stream_sequence=7)
    assert (info.value.subject, info.value.stream_sequence) == ("a.b", 7)


def test_pack_names_a_missing_required_field() -> None:
    fdp = descriptor_pb2.FileDescriptorProto(
        name="test_strict_p2.proto", package="teststrict", syntax="proto2"
    )
    fdp.message_type.add(name="Strict").field.add(
        name="id",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_REQUIRED,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("teststrict.Strict"))
    with pytest.raises(ValueError, match=r"teststrict\.Strict.*required fields: id"):
        _codec.pack(cls())
    filled = cls()
    filled.ParseFromString(b"\n\x01x")  # id = "x": the stubs type cls() as a bare Message
    assert _codec.pack(filled).type_url == "type.googleapis.com/teststrict.Strict"


@pytest.mark.parametrize("bad", [b"x", 1, None, object()])
def test_pack_refuses_non_messages(bad: object) -> None:
    with pytest.raises(TypeError):
        _codec.pack(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("edition", "subject", "elsewhere"),
    [
        (None, "p.events.player.r", False),  # no edition in the cover
        ("", "p.events.player.r", False),
        ("angzarr", "p.events.player.r", False),  # angzarr's main-timeline name
        ("what-if", "p.events.player.r", True),  # angzarr's edition on the shared subject
        ("what-if", "p.events.player.r.what-if", False),  # our edition on its own subject
        ("other", "p.events.player.r.what-if", True),
        ("if", "p.events.player.r.what-if", True),  # a suffix of the token is not the token
    ],
)
def test_elsewhere_tells_another_timelines_commit(
    edition: str | None, subject: str, elsewhere: bool
) -> None:
    book = core_pb2.EventBook()
    if edition is not None:
        book.cover.edition.name = edition
    assert _codec.elsewhere(book, subject) is elsewhere
    assert _codec.elsewhere(edition or "", subject) is elsewhere
