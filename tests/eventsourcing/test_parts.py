"""The module's parts that need no server: settings, subjects, payloads, the
error table, and the event-loop thread's close."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest
from eventsourcing.persistence import (
    DataError,
    IntegrityError,
    InterfaceError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    StoredEvent,
)
from eventsourcing.utils import Environment

from angzarr_es._nats.errors import ATOMIC_PUBLISH_DISABLED, BATCH_TOO_LARGE
from angzarr_es.config import NatsConfig
from angzarr_es.errors import (
    AppendTooLarge,
    CodecError,
    ServerTooOld,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    StreamConfigError,
)
from angzarr_es.eventsourcing._bridge import CallTimeout, Closed, LoopThread
from angzarr_es.eventsourcing._errors import persistence_error, translated
from angzarr_es.eventsourcing._layout import Layout
from angzarr_es.eventsourcing._records import decode_event, encode_event
from angzarr_es.eventsourcing._settings import create_stream, read_settings

# -- settings ---------------------------------------------------------------------


def test_defaults() -> None:
    settings = read_settings(Environment("App", {}))
    assert settings.stream == "eventsourcing"
    assert settings.nats.servers == ["nats://localhost:4222"]
    assert (settings.replicas, settings.originator_id_type) == (1, "uuid")
    assert create_stream(Environment("App", {}))


def test_the_application_name_prefix_overrides_a_key() -> None:
    env = Environment(
        "Orders",
        {
            "ANGZARR_ES_STREAM": "shared",
            "ORDERS_ANGZARR_ES_STREAM": "orders",
            "NATS_URL": "nats://a:4222,nats://b:4222",
            "ORDERS_CREATE_TABLE": "no",
        },
    )
    settings = read_settings(env)
    assert settings.stream == "orders"
    assert settings.nats.servers == ["nats://a:4222", "nats://b:4222"]
    assert not create_stream(env)


def test_credentials_and_tls_reach_the_connection_settings() -> None:
    env = Environment(
        "",
        {
            "NATS_USER": "ann",
            "NATS_PASSWORD": "secret",
            "NATS_CREDENTIALS": "/etc/app.creds",
            "NATS_TLS_CA": "/etc/ca.pem",
            "NATS_REQUEST_TIMEOUT": "0.5",
            "ANGZARR_ES_REPLICAS": "3",
            "ANGZARR_ES_TIMEOUT": "7",
        },
    )
    settings = read_settings(env)
    nats = settings.nats
    assert (nats.user, nats.password, nats.credentials, nats.tls_ca) == (
        "ann",
        "secret",
        "/etc/app.creds",
        "/etc/ca.pem",
    )
    assert (nats.request_timeout, settings.replicas, settings.call_timeout) == (0.5, 3, 7.0)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ANGZARR_ES_STREAM", "two.tokens"),
        ("ORIGINATOR_ID_TYPE", "int"),
        ("ANGZARR_ES_REPLICAS", "2"),
        ("ANGZARR_ES_TIMEOUT", "-1"),
        ("NATS_REQUEST_TIMEOUT", "soon"),
        ("NATS_URL", "http://localhost:4222"),
        ("CREATE_TABLE", "perhaps"),
    ],
)
def test_an_invalid_setting_is_an_os_error_naming_its_key(key: str, value: str) -> None:
    env = Environment("", {key: value})
    check = create_stream if key == "CREATE_TABLE" else read_settings
    with pytest.raises(OSError, match=key if key != "NATS_URL" else "http"):
        check(env)


# -- subjects and payloads ------------------------------------------------------------


def test_subjects_are_per_application_and_purpose() -> None:
    oid = uuid.uuid4()
    events = Layout("es", "BankAccounts", "events", "uuid")
    snapshots = Layout("es", "BankAccounts", "snapshots", "uuid")
    assert events.subject(oid) == f"es.bankaccounts.events.{oid}"
    assert events.subject(str(oid)) == events.subject(oid)
    assert snapshots.subject(oid) == f"es.bankaccounts.snapshots.{oid}"
    assert events.filter == "es.bankaccounts.events.*"
    assert events.tracking("Upstream") == "es.bankaccounts.tracking.Upstream"
    assert Layout("es", "", "events", "uuid").filter == "es.stored.events.*"


def test_text_ids_that_are_not_subject_tokens_get_one_token_of_their_own() -> None:
    layout = Layout("es", "app", "events", "text")
    tokens = {layout.subject(i) for i in ("a.b", "a b", "a*", "a>", "a", "~YQ")}
    assert len(tokens) == 6
    assert all(t.count(".") == 3 for t in tokens)


def test_text_ids_are_taken_as_given_and_uuids_as_uuids() -> None:
    u = uuid.uuid4()
    text = Layout("es", "app", "events", "text")
    assert text.subject(str(u).upper()) != text.subject(str(u))
    as_uuid = Layout("es", "app", "events", "uuid")
    assert as_uuid.subject(str(u).upper()) == as_uuid.subject(u)


def test_a_text_id_in_uuid_mode_is_a_data_error() -> None:
    with pytest.raises(DataError, match="not a UUID"):
        Layout("es", "app", "events", "uuid").subject("not-a-uuid")


def test_payloads_round_trip_state_bytes_unchanged() -> None:
    state = bytes(range(256))
    event = StoredEvent(uuid.uuid4(), 7, "mod:Cls.Event", state)
    record = decode_event(encode_event(str(event.originator_id), event), "x")
    assert (record.originator_version, record.topic, record.state) == (7, "mod:Cls.Event", state)
    with pytest.raises(DataError, match="where: not a stored event"):
        decode_event(b"\x01garbage", "where")


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (StoreTimeout("t"), OperationalError),
        (StoreUnavailable("u"), OperationalError),
        (StoreError("x", err_code=ATOMIC_PUBLISH_DISABLED), NotSupportedError),
        (StoreError("x", err_code=BATCH_TOO_LARGE), DataError),
        (ServerTooOld("old"), NotSupportedError),
        (StreamConfigError("cfg"), ProgrammingError),
        (CodecError("bad"), DataError),
        (AppendTooLarge(10, 5), DataError),
        (Closed("closed"), InterfaceError),
        (CallTimeout("slow"), OperationalError),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else v.__name__,
)
def test_errors_become_the_librarys(raised: Exception, expected: type[Exception]) -> None:
    with pytest.raises(expected) as info, translated("do it"):
        raise raised
    assert type(info.value) is expected
    assert info.value.__cause__ is raised
    assert str(info.value).startswith("do it: ")


def test_the_librarys_own_errors_pass_through() -> None:
    original = IntegrityError("taken")
    assert persistence_error(original, "x") is original


# -- the event-loop thread ---------------------------------------------------------------


def test_a_call_in_flight_fails_at_once_when_closed() -> None:
    bridge = LoopThread("test-bridge")
    started = threading.Event()
    outcome: list[BaseException] = []

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    def call() -> None:
        try:
            bridge.call(forever(), timeout=60)
        except BaseException as exc:  # noqa: BLE001 - the outcome is the test
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    assert started.wait(10)
    began = time.monotonic()
    bridge.close()
    caller.join(10)
    assert time.monotonic() - began < 5
    assert len(outcome) == 1
    assert isinstance(outcome[0], Closed)
    bridge.close()  # twice: nothing happens
    coro = forever()
    with pytest.raises(Closed):
        bridge.call(coro, timeout=1)


def test_a_call_past_its_timeout_is_cancelled() -> None:
    bridge = LoopThread("test-bridge")
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    try:
        with pytest.raises(CallTimeout):
            bridge.call(slow(), timeout=0.05)
        assert cancelled.wait(10)
    finally:
        bridge.close()


def test_a_timeout_the_call_raises_is_its_own_not_the_waits() -> None:
    """A StoreTimeout (a TimeoutError) raised within the timeout keeps its
    message (what is known of the outcome), not "no result in 30s"."""
    bridge = LoopThread("test-bridge")

    async def unknown() -> None:
        raise StoreTimeout("insert: outcome unknown: refused for 2s")

    try:
        with pytest.raises(StoreTimeout, match="outcome unknown"):
            bridge.call(unknown(), timeout=30)
    finally:
        bridge.close()


def test_close_from_the_loop_thread_does_not_wait_for_itself() -> None:
    bridge = LoopThread("test-bridge")
    thread: list[Any] = []

    async def close_from_inside() -> None:
        thread.append(threading.current_thread())
        bridge.close()

    with pytest.raises(Closed):
        bridge.call(close_from_inside(), timeout=10)
    thread[0].join(10)
    assert not thread[0].is_alive()


# -- the write path ------------------------------------------------------------------------


class _OldServer:
    """A wire connected to nats-server 2.11 (no atomic batches); sends nothing."""

    server_version = (2, 11, 0)
    max_payload = 1 << 20
    timeout = 1.0
    cfg = NatsConfig()

    async def publish_batch(self, *args: object) -> None:
        raise AssertionError("a batch was sent to a server that would store it piecemeal")


def test_no_batch_is_sent_to_a_server_without_atomic_batches() -> None:
    from angzarr_es.eventsourcing._shared import Shared
    from angzarr_es.eventsourcing._writes import Writer
    from angzarr_es.store._cache import PositionCache

    writer = Writer(Shared(_OldServer(), "es", PositionCache(10), {}))  # type: ignore[arg-type]
    layout = Layout("es", "app", "events", "uuid")
    oid = uuid.uuid4()
    events = [StoredEvent(oid, 1, "t", b"1"), StoredEvent(oid, 2, "t", b"2")]
    with pytest.raises(NotSupportedError, match=r"2\.12\.0 or newer \(connected to 2\.11\.0\)"):
        asyncio.run(writer.insert(layout, events, None))


def test_all_is_exactly_the_public_surface_and_topics_name_it() -> None:
    import angzarr_es.eventsourcing as module

    public = {name for name in vars(module) if not name.startswith("_")}
    assert set(module.__all__) == public
    assert list(module.__all__) == sorted(module.__all__)
    for name in module.__all__:
        assert getattr(module, name).__module__ == "angzarr_es.eventsourcing"
