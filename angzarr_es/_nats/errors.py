"""One table from nats-py's exceptions and JetStream's error codes to angzarr_es errors.

Everything that can fail below the store ends here: an exception raised by
nats-py (`EXCEPTIONS`), a JetStream API error reply (`api_error`, by
`err_code` then HTTP-like `code`) and a status message (`status_error`, by
status). `tests/unit/test_error_table.py` checks every entry, and that every
exception class nats-py defines has one.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
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
SUBJECTS_OVERLAP = 10065
REPLICAS_NOT_SUPPORTED = 10074
WRONG_LAST_SEQUENCE = 10071
CONSUMER_ALREADY_EXISTS = 10148
DUPLICATE_IN_PROCESS = 10158
WRONG_LAST_SEQUENCE_CLUSTERED = 10164
# Atomic batch publish (nats-server 2.12+).
ATOMIC_PUBLISH_DISABLED = 10174
"""The stream was not created with `allow_atomic`."""
BATCH_INCOMPLETE = 10176
"""A batch arrived with a gap (a message lost on the way): nothing was stored."""
BATCH_TOO_LARGE = 10199
"""More than 1,000 messages in one batch."""
BATCH_DUPLICATE_MSG_ID = 10201
"""A message id of the batch was stored before: the whole batch is refused."""
TOO_MANY_BATCHES = 10210
"""429: the stream has too many batches in flight (50); nothing was stored."""
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
    # Transient: the same batch may be sent again shortly.
    TOO_MANY_BATCHES: StoreUnavailable,
    BATCH_INCOMPLETE: StoreUnavailable,
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
    elif err_code == REPLICAS_NOT_SUPPORTED:
        message += "; set bus.nats.replicas = 1, or connect to a JetStream cluster"
    elif err_code == ATOMIC_PUBLISH_DISABLED:
        message += "; the stream needs allow_atomic (nats-server 2.12 or newer)"
    return error_class(code, err_code)(message, code=code, err_code=err_code)


def status_error(what: str, status: str, description: str = "") -> StoreError:
    """The typed error for a status message (`NATS/1.0 503 <description>`) answering `what`."""
    text = f"{what}: server answered status {status} {description}".rstrip()
    code = int(status) if status.isdigit() else 0
    return error_class(code)(text, code=code)


def refused(exc: BaseException) -> bool:
    """Whether a connect-time error means the server rejected our credentials."""
    if isinstance(exc, nats.errors.AuthorizationError):
        return True
    text = str(exc).lower()
    return "authorization" in text or "authentication" in text


def connect_error(where: str, cause: BaseException, reason: str) -> StoreError:
    """The error for a connect to `where` that failed because of `cause`
    (`reason` says it for a person: nats-py's timeouts say nothing)."""
    if refused(cause):
        return PermissionDenied(f"NATS at {where} refused the credentials: {reason}", code=403)
    # Nothing answered: say where to look (other causes name their own fix).
    hint = UNREACHABLE_HINT if isinstance(cause, (OSError, TimeoutError)) else ""
    return StoreUnavailable(f"cannot connect to NATS at {where}: {reason}{hint}")


UNREACHABLE_HINT = (
    " (is nats-server running there? `angzarr-es server` starts one; "
    "NATS_URL or [bus.nats] url says where to connect)"
)


# nats-server: Permissions Violation for Publish to "<subject>" / Subscription to ...
_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]*)"', re.I)


class Violation(NamedTuple):
    """An asynchronous permissions violation, as nats-py reports it."""

    error: PermissionDenied
    subject: str | None
    """The denied publish's subject (lower case, as nats-py reports it); None
    when the violation concerns every request (a denied subscription)."""
    subscription: bool
    """Whether a subscription was denied (our reply inbox, for one)."""


def violation(exc: BaseException) -> Violation | None:
    """The permissions violation `exc` reports, or None if it is something else."""
    text = str(exc)
    if "permissions violation" not in text.lower():
        return None
    denied = PermissionDenied(f"NATS refused: {text.removeprefix('nats: ')}", code=403)
    found = _VIOLATION.search(text)
    if found is None:
        return Violation(denied, None, False)
    if found.group(1).lower() == "publish":
        return Violation(denied, found.group(2), False)
    return Violation(denied, None, True)
