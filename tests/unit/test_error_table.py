"""The error table: every nats-py exception and JetStream error code maps to
the angzarr_es error the docs promise (httpx's test_exceptions.py is the model)."""

from __future__ import annotations

import inspect

import nats.errors
import pytest

from angzarr_es import errors as e
from angzarr_es._nats import errors as table


def _nats_exception_classes() -> list[type[BaseException]]:
    return [
        cls
        for _, cls in inspect.getmembers(nats.errors, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == nats.errors.__name__
    ]


def test_every_nats_exception_class_has_an_entry() -> None:
    missing = [cls.__name__ for cls in _nats_exception_classes() if cls not in table.EXCEPTIONS]
    assert missing == [], f"nats.errors classes without a rule in EXCEPTIONS: {missing}"


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (nats.errors.TimeoutError(), e.StoreTimeout),
        (nats.errors.FlushTimeoutError(), e.StoreTimeout),
        (nats.errors.DrainTimeoutError(), e.StoreTimeout),
        (TimeoutError(), e.StoreTimeout),
        (nats.errors.NoRespondersError(), e.StoreUnavailable),
        (nats.errors.ConnectionClosedError(), e.StoreUnavailable),
        (nats.errors.ConnectionReconnectingError(), e.StoreUnavailable),
        (nats.errors.ConnectionDrainingError(), e.StoreUnavailable),
        (nats.errors.NoServersError(), e.StoreUnavailable),
        (nats.errors.StaleConnectionError(), e.StoreUnavailable),
        (nats.errors.UnexpectedEOF(), e.StoreUnavailable),
        (nats.errors.OutboundBufferLimitError(), e.StoreUnavailable),
        (nats.errors.SlowConsumerError.__new__(nats.errors.SlowConsumerError), e.StoreUnavailable),
        (ConnectionResetError(), e.StoreUnavailable),
        (nats.errors.AuthorizationError(), e.PermissionDenied),
        (nats.errors.MaxPayloadError(), e.AppendTooLarge),
        (nats.errors.BadSubjectError(), e.StoreError),
        (nats.errors.BadHeaderError(), e.StoreError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
def test_translation(raised: BaseException, expected: type[e.AngzarrESError]) -> None:
    with pytest.raises(expected) as info, table.translated("do a thing"):
        raise raised
    assert type(info.value) is expected
    assert info.value.__cause__ is raised
    assert str(info.value).startswith("do a thing") or expected is e.AppendTooLarge
    assert "0 bytes" not in str(info.value)


@pytest.mark.parametrize("cls", sorted(table.EXCEPTIONS, key=str))
def test_each_entry_builds_its_error(cls: type[BaseException]) -> None:
    rule = table.EXCEPTIONS[cls]
    exc = cls.__new__(cls)
    translated = table.translate(exc, "x")
    assert isinstance(translated, rule.error)
    assert isinstance(translated, e.AngzarrESError)


@pytest.mark.parametrize(
    ("code", "err_code", "expected"),
    [
        (404, table.STREAM_NOT_FOUND, e.StoreUnavailable),
        (503, 0, e.StoreUnavailable),
        (408, 0, e.StoreTimeout),
        (403, 0, e.PermissionDenied),
        (400, table.WRONG_LAST_SEQUENCE, e.StoreError),
        (500, 10049, e.StoreError),
        # Atomic batch publish.
        (400, table.ATOMIC_PUBLISH_DISABLED, e.StoreError),
        (400, table.BATCH_TOO_LARGE, e.StoreError),
        (400, table.BATCH_DUPLICATE_MSG_ID, e.StoreError),
        (400, table.BATCH_INCOMPLETE, e.StoreUnavailable),
        (429, table.TOO_MANY_BATCHES, e.StoreUnavailable),
    ],
)
def test_api_errors(code: int, err_code: int, expected: type[e.StoreError]) -> None:
    err = table.api_error("read x", code, err_code, "described")
    assert type(err) is expected
    assert (err.code, err.err_code) == (code, err_code)
    assert "described" in str(err)
    if err_code == table.STREAM_NOT_FOUND:
        assert "provision" in str(err)
    if err_code == table.ATOMIC_PUBLISH_DISABLED:
        assert "allow_atomic" in str(err)


def test_the_atomic_batch_codes_are_nats_servers() -> None:
    # nats-server 2.15's answers, measured (tests/integration/test_atomic_batch.py).
    assert (
        table.ATOMIC_PUBLISH_DISABLED,
        table.BATCH_INCOMPLETE,
        table.BATCH_TOO_LARGE,
        table.BATCH_DUPLICATE_MSG_ID,
        table.TOO_MANY_BATCHES,
    ) == (10174, 10176, 10199, 10201, 10210)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("503", e.StoreUnavailable),
        ("408", e.StoreTimeout),
        ("403", e.PermissionDenied),
        ("409", e.StoreError),
        ("?", e.StoreError),
    ],
)
def test_status_errors(status: str, expected: type[e.StoreError]) -> None:
    err = table.status_error("read x", status, "why")
    assert type(err) is expected
    assert str(err) == f"read x: server answered status {status} why"


def test_angzarr_errors_pass_through() -> None:
    original = e.ConcurrencyError(1, 2)
    with pytest.raises(e.ConcurrencyError) as info, table.translated("x"):
        raise original
    assert info.value is original


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        (nats.errors.AuthorizationError(), e.PermissionDenied),
        (nats.errors.Error("nats: 'Authorization Violation'"), e.PermissionDenied),
        (nats.errors.Error("nats: authentication expired"), e.PermissionDenied),
        (ConnectionRefusedError(111, "Connection refused"), e.StoreUnavailable),
        (TimeoutError(), e.StoreUnavailable),
        (nats.errors.NoServersError(), e.StoreUnavailable),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.__name__,
)
def test_connect_errors(cause: BaseException, expected: type[e.StoreError]) -> None:
    err = table.connect_error("nats://h:4222", cause, "why")
    assert type(err) is expected
    assert "nats://h:4222" in str(err)
    # Nothing answered: the message says where to look.
    unanswered = isinstance(cause, (OSError, TimeoutError)) and expected is e.StoreUnavailable
    assert str(err).endswith("why" + (table.UNREACHABLE_HINT if unanswered else ""))


def test_permission_violations() -> None:
    publish = table.violation(
        nats.errors.Error('nats: permissions violation for publish to "a.b.c"')
    )
    assert publish is not None
    assert (publish.subject, publish.subscription) == ("a.b.c", False)
    assert isinstance(publish.error, e.PermissionDenied)
    sub = table.violation(
        nats.errors.Error('nats: Permissions Violation for Subscription to "_INBOX.x.*"')
    )
    assert sub is not None
    assert (sub.subject, sub.subscription) == (None, True)
    assert table.violation(nats.errors.Error("nats: slow consumer")) is None


def test_the_server_refusing_replicas_names_the_fix() -> None:
    error = table.api_error(
        "create stream x", 500, table.REPLICAS_NOT_SUPPORTED, "replicas > 1 not supported"
    )
    assert str(error).endswith("; set bus.nats.replicas = 1, or connect to a JetStream cluster")
