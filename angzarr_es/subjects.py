"""Subject names: one literal subject per aggregate.

    <prefix>.events.<domain>.<root-token>[.<edition>]
    <prefix>.snapshots.<domain>.<root-token>[.<edition>]
    <prefix>.correlation.<correlation-token>

The main timeline has no edition token; it is also reachable by the edition
names "" and "angzarr".

A root token is the aggregate id itself when that is safe (UUIDs and ids made
of `[A-Za-z0-9_-]`), otherwise `~` followed by the unpadded base64url of the
id's UTF-8 bytes. `~` never appears in a safe id, so the mapping is reversible
and no id can land on another aggregate's subject, whatever characters it holds
(`.`, `*`, `>`, spaces, non-ASCII).

A string in a UUID's text form names that UUID's aggregate: hyphenated hex in
any case, bare, in braces or after `urn:uuid:`, is first turned into the
canonical lowercase form `str(uuid)` (`canonical_root`), so `u`, `str(u)` and
`str(u).upper()` are one aggregate. Any other string is used exactly as given
(32 hex digits without hyphens included: such ids are often digests), so the
mapping stays a bijection between subject tokens and canonical ids.
Correlation ids are not aggregate ids: they are encoded exactly as given.
"""

from __future__ import annotations

import base64
import re
import uuid

from angzarr_es.errors import InvalidAggregateId, InvalidDomain, InvalidEdition

__all__ = [
    "MAIN_EDITION",
    "MAX_ID_BYTES",
    "AggregateId",
    "Subjects",
    "as_uuid",
    "canonical_root",
    "correlation_token",
    "decode_root",
    "domain_filter",
    "encode_root",
    "events_filter",
    "exact_token",
    "parse_subject",
    "root_bytes",
    "validate_domain",
    "validate_edition",
]

AggregateId = uuid.UUID | str

MAX_ID_BYTES = 1024
MAX_DOMAIN_LEN = 128
_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_ENCODED = "~"


def validate_domain(domain: object) -> str:
    """Return `domain` if it is one safe subject token.

    Raises:
        InvalidDomain: otherwise.
    """
    if not isinstance(domain, str) or not domain:
        raise InvalidDomain(f"domain must be a non-empty string, got {domain!r}")
    if len(domain) > MAX_DOMAIN_LEN or not _SAFE.fullmatch(domain):
        raise InvalidDomain(
            f"domain {domain!r} must be 1-{MAX_DOMAIN_LEN} characters of [A-Za-z0-9_-]"
        )
    return domain


MAIN_EDITION = "angzarr"


def validate_edition(edition: object) -> str:
    """The edition's subject token, "" for the main timeline (None, "" or "angzarr").

    Raises:
        InvalidEdition: not a str of 1-128 characters of [A-Za-z0-9_-].
    """
    if edition is None or edition == "" or edition == MAIN_EDITION:
        return ""
    if (
        not isinstance(edition, str)
        or len(edition) > MAX_DOMAIN_LEN
        or not _SAFE.fullmatch(edition)
    ):
        raise InvalidEdition(
            f"edition {edition!r} must be 1-{MAX_DOMAIN_LEN} characters of [A-Za-z0-9_-]"
        )
    return edition


# A UUID's hyphenated text, and the forms `uuid.UUID` reads it in (any case,
# braces, a `urn:uuid:` prefix); the hex without hyphens is left alone.
_UUID_HEX = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
_UUID_TEXT = re.compile(
    rf"({_UUID_HEX})|\{{({_UUID_HEX})\}}|[Uu][Rr][Nn]:[Uu][Uu][Ii][Dd]:({_UUID_HEX})"
)
_UUID_LENGTHS = frozenset({36, 38, 45})
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_root(root: AggregateId) -> str:
    """The text an aggregate id is stored, listed and delivered as.

    A `uuid.UUID`, or a string in a UUID's text form (any case, in braces, or
    as `urn:uuid:...`), gives `str(uuid)`; any other string is returned as it is.

    Raises:
        InvalidAggregateId: not a str nor a UUID, or empty.
    """
    if isinstance(root, uuid.UUID):
        return str(root)
    if not isinstance(root, str):
        raise InvalidAggregateId(
            f"aggregate id must be a uuid.UUID or str, got {type(root).__name__}"
        )
    if not root:
        raise InvalidAggregateId("aggregate id must not be empty")
    if len(root) in _UUID_LENGTHS:
        found = _UUID_TEXT.fullmatch(root)
        if found is not None:
            return (found[1] or found[2] or found[3]).lower()
    return root


def _token(text: str) -> str:
    """The subject token of a non-empty id, exactly as given.

    Raises:
        InvalidAggregateId: over MAX_ID_BYTES.
    """
    if _SAFE.fullmatch(text) and len(text) <= MAX_ID_BYTES:
        return text
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_ID_BYTES:
        raise InvalidAggregateId(
            f"aggregate id is {len(raw)} bytes; at most {MAX_ID_BYTES} are allowed"
        )
    return _ENCODED + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def exact_token(text: str) -> str:
    """The subject token of a non-empty string exactly as given: a UUID's
    text is not canonicalised, so two different strings never share a token
    (for names and ids that are strings by contract).

    Raises:
        InvalidAggregateId: empty, or over MAX_ID_BYTES.
    """
    if not text:
        raise InvalidAggregateId("aggregate id must not be empty")
    return _token(text)


def encode_root(root: AggregateId) -> str:
    """The subject token for an aggregate id (of its `canonical_root`).

    Raises:
        InvalidAggregateId: empty, not a str/UUID, or over MAX_ID_BYTES.
    """
    return _token(canonical_root(root))


def correlation_token(correlation_id: object) -> str:
    """The subject token for a correlation id (encoded like an aggregate id,
    but exactly as given: a UUID-like correlation id is not canonicalised).

    Raises:
        TypeError: not a str.
        InvalidAggregateId: empty, or over MAX_ID_BYTES (the message says
            "correlation id").
    """
    if not isinstance(correlation_id, str):
        raise TypeError(f"correlation_id must be a str, got {correlation_id!r}")
    try:
        if not correlation_id:
            raise InvalidAggregateId("aggregate id must not be empty")
        return _token(correlation_id)
    except InvalidAggregateId as exc:
        raise InvalidAggregateId(str(exc).replace("aggregate id", "correlation id")) from None


def decode_root(token: str) -> str:
    """The aggregate id (its `canonical_root`) behind a subject token.

    Raises:
        InvalidAggregateId: the token is not one `encode_root` produces.
    """
    if not token.startswith(_ENCODED):
        # A UUID in capitals is a safe token no id encodes to (ids in that
        # form are stored under the lowercase one).
        if not _SAFE.fullmatch(token) or canonical_root(token) != token:
            raise InvalidAggregateId(f"not an aggregate subject token: {token!r}")
        return token
    body = token[len(_ENCODED) :]
    try:
        if not _SAFE.fullmatch(body):
            raise ValueError("not base64url")
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        root = raw.decode("utf-8", "surrogatepass")
        # Only the one token encode_root makes for an id names that id.
        if encode_root(root) != token:
            raise ValueError("not canonical")
    except (ValueError, InvalidAggregateId) as exc:
        raise InvalidAggregateId(f"not an aggregate subject token: {token!r}") from exc
    return root


def as_uuid(root: AggregateId) -> uuid.UUID | None:
    """`root` as a UUID: a `uuid.UUID`, or a UUID's text in any form
    `canonical_root` accepts; None for any other id (16 bytes of text too).

    Raises:
        InvalidAggregateId: not a str nor a UUID, or empty.
    """
    if isinstance(root, uuid.UUID):
        return root
    text = canonical_root(root)
    if len(text) == 36 and _CANONICAL_UUID.fullmatch(text):
        return uuid.UUID(text)
    return None


def root_bytes(root: AggregateId) -> bytes:
    """Bytes for `Cover.root.value`: a UUID's 16 bytes (also for a UUID's text
    in any form `canonical_root` accepts), else the id's UTF-8."""
    found = as_uuid(root)
    if found is not None:
        return found.bytes
    return canonical_root(root).encode("utf-8", "surrogatepass")


def events_filter(prefix: str, domain: str | None = None) -> str:
    """Subject filter for all main-timeline aggregates of `domain` (or of every
    commit of every domain)."""
    subjects = Subjects(prefix)
    if domain is None:
        return subjects.everything()
    return subjects.domain_aggregates(validate_domain(domain))


def domain_filter(prefix: str, domain: str) -> str:
    """Subject filter for everything of `domain`, editions and sub-subjects included."""
    return Subjects(prefix).domain_all(domain)


def parse_subject(prefix: str, subject: str) -> tuple[str, str]:
    """(domain, aggregate id) of an aggregate subject.

    Raises:
        InvalidAggregateId: `subject` is not an aggregate subject under `prefix`.
    """
    domain, root, _ = Subjects(prefix).parse(subject)
    return domain, root


class Subjects:
    """The subject layout under one prefix: every subject and filter the
    project uses is built here, so the layout lives in one place."""

    __slots__ = ("correlation_root", "dlq_root", "events_root", "prefix", "snapshots_root")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.events_root = f"{prefix}.events."
        self.snapshots_root = f"{prefix}.snapshots."
        self.correlation_root = f"{prefix}.correlation."
        self.dlq_root = f"{prefix}.dlq."

    # -- streams' subjects ------------------------------------------------------

    @property
    def events_stream(self) -> list[str]:
        """What the event stream captures: commits and the correlation index."""
        return [self.events_root + ">", self.correlation_root + ">"]

    @property
    def snapshots_stream(self) -> list[str]:
        """What the snapshot stream captures."""
        return [self.snapshots_root + ">"]

    @property
    def dlq_stream(self) -> str:
        """What the dead-letter stream captures."""
        return self.dlq_root + ">"

    # -- one aggregate -------------------------------------------------------------

    def aggregate(self, domain: str, root: AggregateId, edition: str = "") -> str:
        """The subject holding one aggregate's commits (`domain` already validated)."""
        return f"{self.events_root}{domain}.{encode_root(root)}" + (
            f".{edition}" if edition else ""
        )

    def snapshot(self, domain: str, root: AggregateId, edition: str = "") -> str:
        """The subject holding one aggregate's snapshots."""
        tail = f".{edition}" if edition else ""
        return f"{self.snapshots_root}{domain}.{encode_root(root)}{tail}"

    def correlation(self, correlation_id: str) -> str:
        """The index subject of one correlation id (hostile ids are encoded like roots).

        Raises:
            TypeError: not a str.
            InvalidAggregateId: empty or over 1024 bytes.
        """
        return self.correlation_root + correlation_token(correlation_id)

    def dead_letter(self, domain: str) -> str:
        """Where a projector's dead letters of `domain` go ("_" for none)."""
        return f"{self.dlq_root}{domain or '_'}"

    # -- filters ---------------------------------------------------------------------

    def domain_aggregates(self, domain: str, edition: str = "") -> str:
        """Every aggregate of `domain` on one timeline (main, or `edition`)."""
        return f"{self.events_root}{domain}.*" + (f".{edition}" if edition else "")

    def domain_all(self, domain: str) -> str:
        """Everything of `domain`: every timeline and sub-subject."""
        return f"{self.events_root}{validate_domain(domain)}.>"

    def everything(self) -> str:
        """Every commit: every domain, aggregate and timeline."""
        return self.events_root + ">"

    def all_aggregates(self) -> str:
        """Every main-timeline aggregate of every domain."""
        return self.events_root + "*.*"

    def edition_events(self, edition: str) -> str:
        """Every commit of `edition`, in every domain."""
        return f"{self.events_root}*.*.{edition}"

    def edition_snapshots(self, edition: str) -> str:
        """Every snapshot of `edition`, in every domain."""
        return f"{self.snapshots_root}*.*.{edition}"

    # -- reading subjects ------------------------------------------------------------

    def parse(self, subject: str) -> tuple[str, str, str]:
        """(domain, aggregate id, edition) of an aggregate's subject ("" for the main timeline).

        Raises:
            InvalidAggregateId: `subject` is not an aggregate subject under this prefix.
        """
        if not subject.startswith(self.events_root):
            raise InvalidAggregateId(f"{subject!r} is not under {self.events_root!r}")
        parts = subject[len(self.events_root) :].split(".")
        if len(parts) not in (2, 3):
            raise InvalidAggregateId(f"{subject!r} is not an aggregate subject")
        return parts[0], decode_root(parts[1]), parts[2] if len(parts) == 3 else ""

    def is_events_filter(self, text: str) -> bool:
        """Whether subject filter `text` can match commits under this prefix."""
        return text.startswith(self.events_root) or text == f"{self.prefix}.>"

    def domain_of(self, subject: str) -> str:
        """The domain token of an event subject ("" if it is not one)."""
        if not subject.startswith(self.events_root):
            return ""
        return subject[len(self.events_root) :].partition(".")[0]
