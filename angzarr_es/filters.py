"""Subscription filters, resolved against the client's subject prefix.

    filters.everything()             <prefix>.events.>        every domain (the seed's angzarr.events.*.>)
    filters.domain("player")         <prefix>.events.player.*  all player aggregates
    filters.domain("hand", deep=True) <prefix>.events.hand.>   all hand events and deeper sub-subjects
    filters.aggregate("player", id)  <prefix>.events.player.<root-token>

Anywhere a filter is accepted a plain subject string works too; it is used
verbatim (so it must carry the prefix itself).
"""

from __future__ import annotations

import msgspec

from angzarr_es.subjects import AggregateId, Subjects, encode_root, validate_domain

__all__ = ["Filter", "FilterLike", "aggregate", "domain", "everything", "resolve"]


class Filter(msgspec.Struct, frozen=True, kw_only=True):
    """A subject filter relative to the subject prefix."""

    tail: str
    """What follows `<prefix>.events.`, e.g. `player.*`."""

    def subject(self, prefix: str) -> str:
        """The NATS subject filter under `prefix`."""
        return Subjects(prefix).events_root + self.tail


FilterLike = Filter | str


def everything() -> Filter:
    """Every aggregate of every domain, editions (what-if timelines) included:
    tell them apart by `Delivery.edition`."""
    return Filter(tail=">")


def domain(name: str, *, deep: bool = False) -> Filter:
    """All aggregates of domain `name`; with `deep`, their sub-subjects (editions) too.

    Raises:
        InvalidDomain: `name` is not one safe subject token.
    """
    return Filter(tail=f"{validate_domain(name)}.{'>' if deep else '*'}")


def aggregate(domain_name: str, root: AggregateId) -> Filter:
    """One aggregate's main timeline.

    Raises:
        InvalidDomain, InvalidAggregateId: bad domain or id.
    """
    return Filter(tail=f"{validate_domain(domain_name)}.{encode_root(root)}")


def resolve(f: FilterLike, prefix: str) -> str:
    """The subject for `f` (strings are taken verbatim).

    Raises:
        TypeError: `f` is neither a Filter nor a str.
        ValueError: an empty string, or one outside `<prefix>.events.`.
    """
    if isinstance(f, Filter):
        return f.subject(prefix)
    if not isinstance(f, str):
        raise TypeError(f"a filter must be a Filter or a subject string, got {type(f).__name__}")
    if not f or " " in f:
        raise ValueError(f"not a subject filter: {f!r}")
    subjects = Subjects(prefix)
    if not subjects.is_events_filter(f):
        # It could never match a commit (a bare "player" subscribed to nothing).
        raise ValueError(
            f"subject filter {f!r} is not under {subjects.events_root!r}: use "
            "filters.domain(...) or a subject that carries the prefix"
        )
    return f
