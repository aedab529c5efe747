"""Subject mapping: reversible, injective, and always a single safe token."""

from __future__ import annotations

import base64
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from angzarr_es import InvalidAggregateId, InvalidDomain
from angzarr_es.bus._delivery import root_of
from angzarr_es.pb import core_pb2
from angzarr_es.subjects import (
    MAX_ID_BYTES,
    canonical_root,
    correlation_token,
    decode_root,
    domain_filter,
    encode_root,
    events_filter,
    exact_token,
    parse_subject,
    root_bytes,
    validate_domain,
)

ids = st.text(min_size=1, max_size=200).filter(
    lambda s: len(s.encode("utf-8", "surrogatepass")) <= MAX_ID_BYTES
)


@given(ids)
def test_encoding_round_trips(root: str) -> None:
    assert decode_root(encode_root(root)) == canonical_root(root)
    if canonical_root(root) == root:  # every id but a UUID's other text forms
        assert decode_root(encode_root(root)) == root


@given(ids)
def test_tokens_are_single_safe_subject_tokens(root: str) -> None:
    token = encode_root(root)
    assert token
    assert not any(c in token for c in ".*> \t\r\n\x00")
    assert token.isascii()


@given(ids, ids)
def test_distinct_ids_get_distinct_tokens(a: str, b: str) -> None:
    if canonical_root(a) != canonical_root(b):
        assert encode_root(a) != encode_root(b)


@given(st.uuids())
def test_uuid_and_canonical_string_share_a_token(u: uuid.UUID) -> None:
    assert encode_root(u) == encode_root(str(u)) == str(u)
    assert root_bytes(u) == root_bytes(str(u)) == u.bytes


def uuid_forms(u: uuid.UUID) -> list[str]:
    text = str(u)
    return [text, text.upper(), f"{{{text}}}", f"{{{text.upper()}}}", f"urn:uuid:{text}",
            f"URN:UUID:{text.upper()}", f"urn:UUID:{text}"]  # fmt: skip


@given(ids, ids)
def test_exact_tokens_keep_every_string_apart(a: str, b: str) -> None:
    # For ids that are strings by contract (the eventsourcing module's text ids).
    assert (exact_token(a) == exact_token(b)) == (a == b)
    assert not any(c in exact_token(a) for c in ".*> \t\r\n\x00")


@given(st.uuids())
def test_exact_tokens_do_not_canonicalise_a_uuids_text(u: uuid.UUID) -> None:
    forms = {exact_token(form) for form in uuid_forms(u)}
    assert len(forms) == len(uuid_forms(u))
    assert exact_token(str(u)) == encode_root(u)


@given(st.uuids())
def test_a_uuid_in_any_text_form_names_the_uuids_aggregate(u: uuid.UUID) -> None:
    """`str(u).upper()` named another aggregate than `u` (issue 19)."""
    for form in uuid_forms(u):
        assert canonical_root(form) == str(u), form
        assert encode_root(form) == encode_root(u) == str(u), form
        assert root_bytes(form) == u.bytes, form
        assert decode_root(encode_root(form)) == str(u)
    # A token that no canonical id encodes to is not an aggregate's.
    braced = base64.urlsafe_b64encode(f"{{{u}}}".encode()).rstrip(b"=").decode()
    for token in (str(u).upper(), "~" + braced):
        if token != str(u):
            with pytest.raises(InvalidAggregateId):
                decode_root(token)


@given(st.uuids())
def test_other_uuid_like_strings_and_correlation_ids_stay_as_given(u: uuid.UUID) -> None:
    for other in (u.hex, u.hex.upper(), f"{{{u.hex}}}", f" {u}", f"{u}-x", f"uuid:{u}"):
        assert canonical_root(other) == other
        assert decode_root(encode_root(other)) == other
        assert root_bytes(other) == other.encode()
    # Correlation ids are not aggregate ids: each spelling is its own.
    assert correlation_token(str(u).upper()) != correlation_token(str(u))


@pytest.mark.parametrize("bad", ["", None, 3, b"x", "x" * (MAX_ID_BYTES + 1), "é" * 600])
def test_bad_ids(bad: object) -> None:
    with pytest.raises(InvalidAggregateId):
        encode_root(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["~~~", "~!", "a.b", "~" + "A" * 5])
def test_tokens_not_made_by_encode_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidAggregateId):
        decode_root(bad)


@given(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True))
def test_safe_domains_are_accepted(domain: str) -> None:
    assert validate_domain(domain) == domain


@given(
    st.text().filter(
        lambda s: not s or any(not (c.isascii() and (c.isalnum() or c in "_-")) for c in s)
    )
)
def test_unsafe_domains_are_rejected(domain: str) -> None:
    with pytest.raises(InvalidDomain):
        validate_domain(domain)


def test_filters_follow_the_seed_examples() -> None:
    assert events_filter("angzarr", "player") == "angzarr.events.player.*"
    assert events_filter("angzarr") == "angzarr.events.>"
    assert domain_filter("angzarr", "hand") == "angzarr.events.hand.>"


@given(st.from_regex(r"[a-z]{1,10}", fullmatch=True), ids)
def test_parse_subject_inverts_the_mapping(domain: str, root: str) -> None:
    subject = f"angzarr.events.{domain}.{encode_root(root)}"
    assert parse_subject("angzarr", subject) == (domain, root)


def test_root_of_a_cover_inverts_root_bytes() -> None:
    pid = uuid.uuid4()
    cases: list[tuple[uuid.UUID | str, str]] = [(pid, str(pid)), ("p-7", "p-7"), ("é x", "é x")]
    for root, text in cases:
        cover = core_pb2.Cover(domain="player")
        cover.root.value = root_bytes(root)
        assert root_of(cover) == text
