"""Which stream holds what: the one place that maps domains to streams.

    layout       commits of domain D                 correlation index         snapshots
    single       <stream_name>                       <stream_name>             <snapshot_stream>
    per-domain   <PREFIX>_<D> (both upper-cased)     <base>-correlation        <snapshot_stream>
                 over <prefix>.events.<D>.>           over <prefix>.correlation.>

`<base>` is `stream_name` minus "-events" (default `angzarr-correlation`).
The per-domain layout is the one angzarr's NATS bus creates and uses (its
`src/bus/nats/bus.rs`: `{PREFIX}_{DOMAIN}` over `{prefix}.events.{domain}.>`),
so both can share a server. The snapshot, correlation and dead-letter streams
never capture a domain's subjects, and their names cannot be taken for a
domain stream's (config.py refuses names starting with `<PREFIX>_`). Domains
that differ only in case name the same stream; the store refuses the second
spelling (`store/_context.py`).
"""

from __future__ import annotations

from angzarr_es.config import NatsConfig
from angzarr_es.errors import InvalidDomain
from angzarr_es.subjects import Subjects, validate_domain

__all__ = ["Streams"]


class Streams:
    """The stream layout of one configuration: every module asks here which
    stream holds a domain's commits, the index and the snapshots."""

    __slots__ = (
        "_domain_names",
        "correlation",
        "dlq",
        "per_domain",
        "single",
        "snapshots",
        "subjects",
    )

    def __init__(self, cfg: NatsConfig) -> None:
        self.per_domain = cfg.stream_layout == "per-domain"
        self.subjects = Subjects(cfg.subject_prefix)
        self.single = cfg.stream_name
        """The event stream of the single layout."""
        self.snapshots = cfg.snapshot_stream
        self.correlation = cfg.correlation_stream
        self.dlq = cfg.dlq_stream
        self._domain_names = cfg.subject_prefix.upper() + "_"

    def events(self, domain: str) -> str:
        """The stream holding `domain`'s commits (`domain` already validated)."""
        if not self.per_domain:
            return self.single
        return self._domain_names + domain.upper()

    def domain_subjects(self, domain: str) -> list[str]:
        """What a per-domain stream of `domain` captures (angzarr's filter)."""
        return [self.subjects.domain_all(domain)]

    def domain_of_stream(self, name: str, subjects: list[str]) -> str | None:
        """The domain a per-domain stream `name` with `subjects` holds, or None
        if it is not a domain stream of this prefix."""
        if not name.startswith(self._domain_names):
            return None
        root = self.subjects.events_root
        for subject in subjects:
            if not (subject.startswith(root) and subject.endswith(".>")):
                continue
            domain = subject[len(root) : -2]
            if _token(domain) and self.events(domain) == name:
                return domain
        return None

    def domain_of_filter(self, subject_filter: str) -> str | None:
        """The one domain a subject filter is confined to, or None if it may
        match several domains (a wildcard in the domain's place)."""
        root = self.subjects.events_root
        if not subject_filter.startswith(root):
            return None
        domain = subject_filter[len(root) :].partition(".")[0]
        return domain if _token(domain) else None

    def of_subject(self, subject: str) -> str:
        """The stream holding the commit subject `subject`."""
        return self.events(self.subjects.domain_of(subject))


def _token(text: str) -> bool:
    try:
        validate_domain(text)
    except InvalidDomain:
        return False
    return True
