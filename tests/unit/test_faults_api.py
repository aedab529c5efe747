"""angzarr_es.testing.faults without a server: naming requests, the replies
it builds, one interception per client (the interception itself is used by
the fault tests under tests/integration and tests/faults)."""

from __future__ import annotations

import msgspec
import pytest

from angzarr_es.testing import faults
from angzarr_es.testing.faults import Request


@pytest.mark.parametrize(
    ("subject", "operation"),
    [
        ("angzarr.events.player.p", ""),
        ("$JS.API.INFO", "INFO"),
        ("$JS.API.STREAM.INFO.s", "STREAM.INFO"),
        ("$JS.API.STREAM.MSG.GET.s", "STREAM.MSG.GET"),
        ("$JS.API.DIRECT.GET.s", "DIRECT.GET"),
        ("$JS.API.DIRECT.GET.s.angzarr.events.player.p", "DIRECT.GET"),
        ("$JS.API.CONSUMER.CREATE.s.c", "CONSUMER.CREATE"),
        ("$JS.API.CONSUMER.CREATE.s.c.angzarr.events.>", "CONSUMER.CREATE"),
        ("$JS.API.CONSUMER.DURABLE.CREATE.s.c", "CONSUMER.DURABLE.CREATE"),
        ("$JS.API.CONSUMER.MSG.NEXT.s.c", "CONSUMER.MSG.NEXT"),
        ("$JS.API.STREAM.PURGE.s", "STREAM.PURGE"),
        ("$JS.API.NEW.THING.x", "NEW.THING"),
    ],
)
def test_operation_names_the_api_call(subject: str, operation: str) -> None:
    assert faults.operation(Request(subject)) == operation


def test_error_replies_take_the_form_jetstream_gives_them() -> None:
    api = faults.error_reply(Request("$JS.API.STREAM.INFO.s"), 503, 10008, "unavailable")
    assert msgspec.json.decode(api.data) == {
        "type": "io.nats.jetstream.api.v1.error",
        "error": {"code": 503, "err_code": 10008, "description": "unavailable"},
    }
    ack = faults.error_reply(Request("angzarr.events.player.p"), 400, 10071, "wrong last")
    assert msgspec.json.decode(ack.data) == {
        "error": {"code": 400, "err_code": 10071, "description": "wrong last"}
    }
    assert api.headers is None


def test_status_replies() -> None:
    assert faults.status_reply("503").headers == {"Status": "503"}
    assert faults.status_reply("404", "Message Not Found").headers == {
        "Status": "404",
        "Description": "Message Not Found",
    }
    assert faults.status_reply("503").data == b""
