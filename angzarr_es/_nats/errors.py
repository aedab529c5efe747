"""One table from nats-py's exceptions and JetStream's error codes to angzarr_es errors.

Everything that can fail below the store ends here: an exception raised by
nats-py (`EXCEPTIONS`), a JetStream API error reply (`api_error`, by
`err_code` then HTTP-like `code`) and a status message (`status_error`, by
status). `tests/unit/test_error_table.py` checks every entry, and that every
exception class nats-py defines has one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import nats.errors

from angzarr_es.errors import (
    AngzarrESError,
    AppendTooLarge,
    PermissionDenied,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
)

# JetStream error codes the project acts on (nats-server's errors.json).
CLUSTER_NOT_AVAILABLE = 10008  # "JetStream system temporarily unavailable" (503)
CONSUMER_NOT_FOUND = 10014
NO_MESSAGE_FOUND = 10037
JETSTREAM_NOT_ENABLED_FOR_ACCOUNT = 10039
STREAM_NAME_IN_USE = 10058
STREAM_NOT_FOUND = 10059
WRONG_LAST_SEQUENCE = 10071
CONSUMER_ALREADY_EXISTS = 10148
DUPLICATE_IN_PROCESS = 10158
WRONG_LAST_SEQUENCE_CLUSTERED = 10164
CONFLICT_CODES = frozenset({WRONG_LAST_SEQUENCE, WRONG_LAST_SEQUENCE_CLUSTERED})
"""A publish's expected last subject sequence did not hold: a concurrency conflict."""

PROVISION_HINT = "`angzarr-es provision` or `await client.provision()`"
"""How to create the streams, for errors about a missing one."""

NO_RESPONDERS = "no responders (is JetStream enabled and the stream provisioned?)"


class Rule(NamedTuple):
    """How one nats-py exception class becomes an angzarr_es error."""

    error: type[AngzarrESError]
    text: str
    """Message, formatted with `what` (the operation) and `exc` (the original)."""
    code: int = 0
    """The `StoreError.code` to set (HTTP-like; 0 for none)."""


_TIMEOUT = Rule(StoreTimeout, "{what}: no answer from NATS in time")
_GONE = Rule(StoreUnavailable, "{what}: {exc!r}")
_REFUSED = Rule(StoreError, "{what}: rejected by the client: {exc!r}")

EXCEPTIONS: dict[type[BaseException], Rule] = {
    # No answer in time: the outcome of a publish is unknown.
    nats.errors.TimeoutError: _TIMEOUT,
    nats.errors.FlushTimeoutError: _TIMEOUT,
    nats.errors.DrainTimeoutError: _TIMEOUT,
    TimeoutError: _TIMEOUT,
    # Nothing reached JetStream: nothing was stored.
    nats.errors.NoRespondersError: Rule(StoreUnavailable, "{what}: " + NO_RESPONDERS, 503),
    nats.errors.NoServersError: _GONE,
    nats.errors.ConnectionClosedError: _GONE,
    nats.errors.ConnectionDrainingError: _GONE,
    nats.errors.ConnectionReconnectingError: _GONE,
    nats.errors.StaleConnectionError: _GONE,
    nats.errors.UnexpectedEOF: _GONE,
    nats.errors.OutboundBufferLimitError: _GONE,
    nats.errors.SlowConsumerError: _GONE,
    nats.errors.ProtocolError: _GONE,
    nats.errors.ServerNotInPoolError: _GONE,
    nats.errors.SecureConnFailedError: _GONE,
    nats.errors.SecureConnRequiredError: _GONE,
    nats.errors.SecureConnWantedError: _GONE,
    nats.errors.Error: _GONE,
    OSError: Rule(StoreUnavailable, "{what}: {exc}"),
    nats.errors.AuthorizationError: Rule(PermissionDenied, "{what}: {exc}", 403),
    nats.errors.InvalidUserCredentialsError: Rule(PermissionDenied, "{what}: {exc}", 403),
    # Refused by nats-py before sending: nothing was sent.
    nats.errors.MaxPayloadError: Rule(AppendTooLarge, "{what}"),
    nats.errors.BadSubjectError: _REFUSED,
    nats.errors.BadHeaderError: _REFUSED,
    nats.errors.BadSubscriptionError: _REFUSED,
    nats.errors.BadTimeoutError: _REFUSED,
    nats.errors.InvalidCallbackTypeError: _REFUSED,
    nats.errors.JsonParseError: _REFUSED,
    nats.errors.MsgAlreadyAckdError: _REFUSED,
    nats.errors.NotJSMessageError: _REFUSED,
}
"""nats-py exception class -> rule; a class not listed takes its nearest listed base."""

STATUS_ERRORS: dict[int, type[StoreError]] = {
    503: StoreUnavailable,
    408: StoreTimeout,
    403: PermissionDenied,
}
"""HTTP-like status or API `code` -> error class (anything else: StoreError)."""

ERR_CODE_ERRORS: dict[int, type[StoreError]] = {
    STREAM_NOT_FOUND: StoreUnavailable,
}
"""JetStream `err_code` -> error class, checked before the `code`."""


def translate(exc: BaseException, what: str) -> AngzarrESError:
    """The angzarr_es error for nats-py (or socket) exception `exc` raised while doing `what`."""
    if isinstance(exc, AngzarrESError):
        return exc
    for cls in type(exc).__mro__:
        rule = EXCEPTIONS.get(cls)
        if rule is not None:
            break
    else:
        return StoreError(f"{what}: {exc!r}")
    text = rule.text.format(what=what, exc=exc)
    if rule.error is AppendTooLarge:
        return AppendTooLarge(0, 0, detail=text)
    if issubclass(rule.error, StoreError):
        return rule.error(text, code=rule.code)
    return rule.error(text)


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise the translation of nats-py exceptions raised inside the block."""
    try:
        yield
    except AngzarrESError:
        raise
    except (nats.errors.Error, OSError) as exc:  # TimeoutError is an OSError
        raise translate(exc, what) from exc


def error_class(code: int, err_code: int = 0) -> type[StoreError]:
    """The error class for a JetStream API error or a status."""
    return ERR_CODE_ERRORS.get(err_code) or STATUS_ERRORS.get(code) or StoreError


def api_error(what: str, code: int, err_code: int, description: str) -> StoreError:
    """The typed error for a JetStream API error reply."""
    message = f"{what}: {description} (code {code}, err_code {err_code})"
    if err_code == STREAM_NOT_FOUND:
        message += f"; create the streams with {PROVISION_HINT}"
    return error_class(code, err_code)(message, code=code, err_code=err_code)


def status_error(what: str, status: str, headers: Mapping[str, str] | None = None) -> StoreError:
    """The typed error for a status message (`NATS/1.0 503`, ...) answering `what`."""
    description = (headers or {}).get("Description", "")
    text = f"{what}: server answered status {status} {description}".rstrip()
    code = int(status) if status.isdigit() else 0
    return error_class(code)(text, code=code)


def refused(exc: BaseException) -> bool:
    """Whether a connect-time error means the server rejected our credentials."""
    if isinstance(exc, nats.errors.AuthorizationError):
        return True
    text = str(exc).lower()
    return "authorization" in text or "authentication" in text
