"""Every exception angzarr_es raises.

    AngzarrESError
    ├── ConfigError              bad or unsupported configuration
    ├── InvalidDomain            (also ValueError) domain is not one safe subject token
    ├── InvalidAggregateId       (also ValueError) empty or oversized aggregate id
    ├── InvalidEdition           (also ValueError) bad edition name, or the main timeline where refused
    ├── InvalidSnapshot          (also ValueError) snapshot of a sequence the aggregate has not reached
    ├── CodecError               a stored payload cannot be decoded
    ├── ConcurrencyError         optimistic concurrency check failed
    ├── AppendTooLarge           (also ValueError) commit exceeds the server's max_payload
    ├── ServerTooOld             the server lacks a feature the store needs
    ├── StreamConfigError        an existing stream's settings conflict with the store's
    ├── ConsumerConfigError      an existing durable consumer conflicts with a projector's
    └── StoreError               the server refused a request
        ├── StoreUnavailable     (also ConnectionError) no server, no stream, no responders
        ├── StoreTimeout         (also TimeoutError) no answer in time
        └── PermissionDenied     (also PermissionError) the account may not do this

Client-library errors are translated in one table (`angzarr_es._nats.errors`)
and never reach the caller untranslated; the original is kept as `__cause__`.
"""

from __future__ import annotations


class AngzarrESError(Exception):
    """Root of every error raised by angzarr_es."""


class ConfigError(AngzarrESError):
    """The configuration file or environment is invalid."""


class InvalidDomain(AngzarrESError, ValueError):
    """A domain name is not a single safe NATS subject token."""


class InvalidAggregateId(AngzarrESError, ValueError):
    """An aggregate id is empty, of the wrong type or too long."""


class InvalidEdition(AngzarrESError, ValueError):
    """An edition name is not a safe subject token, or names the main timeline where refused."""


class InvalidSnapshot(AngzarrESError, ValueError):
    """A snapshot's sequence is negative or beyond the aggregate's last event."""


class CodecError(AngzarrESError):
    """A stored payload could not be decoded."""

    def __init__(self, message: str, *, subject: str = "", stream_sequence: int = 0) -> None:
        super().__init__(message)
        self.subject = subject
        self.stream_sequence = stream_sequence


class ConcurrencyError(AngzarrESError):
    """The aggregate's next sequence is not the one the caller expected."""

    def __init__(self, expected: int, actual: int, *, subject: str = "", detail: str = "") -> None:
        super().__init__(
            (detail or f"expected next sequence {expected} but the aggregate is at {actual}")
            + (f" ({subject})" if subject else "")
        )
        self.expected = expected
        self.actual = actual
        self.subject = subject


class AppendTooLarge(AngzarrESError, ValueError):
    """A commit is larger than the server accepts in one message."""

    def __init__(self, size: int, limit: int, *, events: int = 0, detail: str = "") -> None:
        if size and limit:
            count = "one event" if events == 1 else f"{events} events" if events else ""
            text = (
                f"commit of {size} bytes{f' ({count})' if count else ''} exceeds the "
                f"server's max_payload of {limit} bytes"
            )
        else:  # refused by the client library, which does not say the sizes
            text = f"{detail or 'a message'} exceeds the server's max_payload"
        raise_it = "raise max_payload in the nats-server configuration (64 MB at most)"
        fix = (
            f"one event cannot be split: {raise_it}, or keep large data out of events"
            if events == 1
            else f"split the events over several appends, or {raise_it}"
        )
        super().__init__(f"{text}; nothing was written: {fix}")
        self.size = size
        self.limit = limit


class ServerTooOld(AngzarrESError):
    """The connected nats-server lacks a feature the store relies on."""


class StreamConfigError(AngzarrESError):
    """An existing stream is configured in a way the store will not accept."""


class ConsumerConfigError(AngzarrESError):
    """An existing durable consumer is defined in a way a projector will not accept."""


class StoreError(AngzarrESError):
    """The server refused or failed a request."""

    def __init__(self, message: str, *, code: int = 0, err_code: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.err_code = err_code


class StoreUnavailable(StoreError, ConnectionError):
    """No server, no JetStream, or no stream answered."""


class StoreTimeout(StoreError, TimeoutError):
    """The server did not answer in time."""


class PermissionDenied(StoreError, PermissionError):
    """The NATS account is not permitted to publish or subscribe there."""
