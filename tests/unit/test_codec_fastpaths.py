"""The codec's fast paths give exactly what the plain protobuf reading gives."""

from __future__ import annotations

import datetime as dt

from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from angzarr_es import _codec
from angzarr_es.codec import RecordedEvent
from angzarr_es.pb import core_pb2, player_pb2

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
stamps = st.datetimes(
    min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
)


def reference_encode(
    domain: str, root: bytes, first: int, events: list[any_pb2.Any], created_at: dt.datetime
) -> bytes:
    book = core_pb2.EventBook()
    book.cover.root.value = root
    book.cover.domain = domain
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(created_at)
    for offset, packed in enumerate(events):
        page = book.pages.add()
        page.header.sequence = first + offset
        page.created_at.CopyFrom(stamp)
        page.event.CopyFrom(packed)
    book.next_sequence = first + len(events)
    return book.SerializeToString()


def reference_recorded(book: core_pb2.EventBook, lo: int, hi: int | None) -> list[RecordedEvent]:
    """Every page read on its own, as RecordedEvent documents it."""
    out = []
    for page in book.pages:
        seq = page.header.sequence
        if seq < lo or (hi is not None and seq >= hi):
            continue
        event: Message
        if page.no_commit or page.WhichOneof("payload") is None:
            event, name = page, "angzarr_es.core.EventPage"
        elif page.WhichOneof("payload") == "external":
            event, name = page.external, "angzarr_es.core.PayloadReference"
        else:
            event, name = _codec.unpack(page.event), _codec.type_name_of(page.event.type_url)
        out.append(
            RecordedEvent(
                sequence=seq,
                event=event,
                type_name=name,
                created_at=page.created_at.ToDatetime(tzinfo=dt.UTC),
                correlation_id=book.cover.correlation_id,
            )
        )
    return out


PAGE_KINDS = ["deposit", "deposit/", "unknown", "claim", "pending", "pending-claim", "empty"]


def fill_page(page: core_pb2.EventPage, kind: str, n: int) -> None:
    """Give `page` a payload of `kind`: an event (packed with the default type
    URL prefix, or "/" for "deposit/"), a type unknown here, or what angzarr
    writes besides events (a claim check, a pending page, nothing)."""
    if kind.startswith("deposit"):
        prefix = "/" if kind.endswith("/") else _codec.TYPE_URL_PREFIX
        page.event.CopyFrom(_codec.pack(player_pb2.FundsDeposited(amount_cents=n), prefix))
    elif kind == "unknown":
        page.event.type_url = "/unknown.Type"
        page.event.value = b"\x08\x01"
    if kind.endswith("claim"):
        page.external.uri = f"s3://payloads/{n}.bin"
        page.external.original_size = n
    if kind.startswith("pending"):
        if not kind.endswith("claim"):
            page.event.CopyFrom(_codec.pack(player_pb2.FundsDeposited(amount_cents=n)))
        page.no_commit = True
        page.cascade_id = f"cascade-{n}"


@settings(deadline=None)  # a loaded CI machine must not make this flaky
@given(
    first=st.integers(0, 2**31),
    amounts=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=12),
    created_at=stamps,
)
def test_encode_commit_matches_the_plain_protobuf_encoding(
    first: int, amounts: list[int], created_at: dt.datetime
) -> None:
    events = [_codec.pack(player_pb2.FundsDeposited(amount_cents=a)) for a in amounts]
    got = _codec.encode_commit(
        domain="player",
        root=b"\x01" * 16,
        first_sequence=first,
        events=events,
        correlation_id="",
        created_at=created_at,
    )
    assert got == reference_encode("player", b"\x01" * 16, first, events, created_at)


@st.composite
def books(draw: st.DrawFn) -> core_pb2.EventBook:
    """Books as any writer may produce them: increasing sequences (gaps allowed),
    non-decreasing timestamps (one per commit or one per event), known and
    unknown event types, and angzarr's pages without a committed event."""
    count = draw(st.integers(0, 8))
    seq = draw(st.integers(0, 1000))
    when = draw(st.integers(-(2**33), 2**33))
    nanos = draw(st.integers(0, 999_999_999))
    book = core_pb2.EventBook()
    book.cover.correlation_id = draw(st.sampled_from(["", "corr-1"]))
    for _ in range(count):
        page = book.pages.add()
        page.header.sequence = seq
        page.created_at.seconds = when
        page.created_at.nanos = nanos
        fill_page(page, draw(st.sampled_from(PAGE_KINDS)), seq)
        seq += draw(st.sampled_from([1, 1, 1, 2]))
        if draw(st.integers(0, 3)) == 0:
            when += draw(st.integers(0, 5))
            nanos = draw(st.integers(0, 999_999_999))
    return book


@settings(deadline=None)
@given(book=books(), lo=st.integers(0, 1010), span=st.none() | st.integers(0, 20))
def test_recorded_matches_reading_every_page(
    book: core_pb2.EventBook, lo: int, span: int | None
) -> None:
    hi = None if span is None else lo + span
    parsed = core_pb2.EventBook.FromString(book.SerializeToString())
    assert _codec.recorded(parsed, lo, hi) == reference_recorded(parsed, lo, hi)
    assert _codec.recorded(parsed) == reference_recorded(parsed, 0, None)
