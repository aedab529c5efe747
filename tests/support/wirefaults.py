"""Failures injected at the wire, through the public `angzarr_es.testing.faults`:
every request a client makes with a reply (publishes, JetStream API calls,
single Direct Gets) is handed to `WireFaults`, which can lose it, drop the
reply of one that was served, or answer it as the server does when it cannot
(503 statuses, JetStream error replies), at exactly the request it names.

    faults = WireFaults(client)
    faults.add(Fault("publish", 1, DROP_REPLY))   # the first publish is stored, its ack lost
    faults.add(Fault("msg_get", 1, UNAVAILABLE))  # then one leader read answers 10008

An eventsourcing factory's connection is put under faults with `on=` (its
`TapPoint`) and `prefix=` (the recorder's `<stream>.<app>`, whose stored
events are then the "publish" requests), `client` serving only the test's
own admin requests (`freeze`).

A deposed stream leader (paused while the others elected a new one, not yet
aware) is `STALE`: `await faults.freeze(stream, subject)` takes its copy of
the stream, and each request a STALE fault hits is answered from that copy.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import msgspec

from angzarr_es import Client
from angzarr_es.errors import StoreTimeout, StoreUnavailable
from angzarr_es.testing import faults as wire
from angzarr_es.testing.faults import Batch, Forward, Reply, Request
from tests.support import jsadmin

# What a failure does to the request it hits.
DROP_REPLY = "drop_reply"
"""Sent and served (a publish is stored), but the reply never arrives."""
LOSE = "lose"
"""Never reaches the server; the caller waits out its timeout."""
NO_RESPONDERS = "no_responders"
"""The server answers status 503: nobody serves the subject (no stream leader)."""
UNAVAILABLE = "unavailable"
"""JetStream answers 503 / 10008 "JetStream system temporarily unavailable"."""
REFUSED = "refused"
"""JetStream answers some other error (500): the request was refused."""
DISCONNECTED = "disconnected"
"""The connection is down when it is sent: nothing goes out."""

STALE = "stale"
"""Answered by a deposed leader from its copy of the stream (`freeze`): a
publish is stored all the same (the new leader got it too) but refused with
10071 naming the subject's last sequence in the copy; a read of a message
stored since finds nothing, a read of the subject's last one the copy's."""
STALE_IN_PROCESS = "stale_in_process"
"""A publish stored, but refused with 10164 (a deposed leader with a proposal
on the subject left in flight when it was paused)."""
CONFLICTED = "conflicted"
"""A publish not sent, refused with 10164 (a rival's write in flight)."""

MODES = (DROP_REPLY, LOSE, NO_RESPONDERS, UNAVAILABLE, REFUSED, DISCONNECTED)


def kind_of(subject: str, prefix: str) -> str:
    """What a request on `subject` is, for a client whose subject prefix is `prefix`."""
    if subject.startswith(f"{prefix}.events."):
        return "publish"
    if subject.startswith(f"{prefix}.correlation."):
        return "entry"
    if subject.startswith(f"{prefix}.snapshots."):
        return "snapshot"
    for api, kind in (
        ("$JS.API.DIRECT.GET.", "direct_get"),
        ("$JS.API.STREAM.MSG.GET.", "msg_get"),
        ("$JS.API.STREAM.PURGE.", "purge"),
        ("$JS.API.STREAM.INFO.", "stream_info"),
    ):
        if subject.startswith(api):
            return kind
    return "other"


def is_commit(client: Client, request: Request) -> bool:
    """Whether `request` is a publish of one of `client`'s commits."""
    return kind_of(request.subject, client.config.nats.subject_prefix) == "publish"


def ack_of(reply: Reply) -> dict[str, Any]:
    """A PubAck as JSON: `seq`, `duplicate`, or `error` with its `err_code`."""
    return msgspec.json.decode(reply.data) if reply.data else {}


def last_by_subject(request: Request) -> tuple[str, str] | None:
    """(stream, subject) of a Direct Get of a subject's last message; None
    for any other request."""
    head = "$JS.API.DIRECT.GET."
    if not request.subject.startswith(head):
        return None
    stream, _, subject = request.subject[len(head) :].partition(".")
    return (stream, subject) if subject else None


def replica_page(got: Batch, keep: int, last: int, *, more: bool = False) -> Batch:
    """A Direct Get batch answered as a replica that lags would: the first
    `keep` messages of `got`, ending at stream sequence `last`, with `more`
    messages said to remain or none."""
    if not keep and not more:
        return Batch([], "404")
    return Batch(got.messages[:keep], "204", last, keep + 1 if more else 0)


def leader_read(request: Request) -> dict[str, Any] | None:
    """The body of a STREAM.MSG.GET (a read the stream leader answers:
    `seq`, `last_by_subj`, `next_by_subj`); None for any other request."""
    if wire.operation(request) != "STREAM.MSG.GET":
        return None
    body: dict[str, Any] = msgspec.json.decode(request.payload or b"{}")
    return body


def _ack_tokens(reply: str) -> list[str]:
    """A pulled message's ack subject, `$JS.ACK.<stream>.<consumer>.<delivered>.
    <stream seq>.<consumer seq>.<timestamp>.<pending>` (the form of a server
    without a JetStream domain), as its tokens."""
    tokens = reply.split(".")
    assert len(tokens) == 9, reply
    assert tokens[:2] == ["$JS", "ACK"], reply
    return tokens


def ack_stream_sequence(reply: str) -> int:
    """The stream sequence a pulled message's ack subject names."""
    return int(_ack_tokens(reply)[5])


def with_pending(reply: str, pending: int) -> str:
    """A pulled message's ack subject saying `pending` messages remain."""
    tokens = _ack_tokens(reply)
    tokens[8] = str(pending)
    return ".".join(tokens)


@dataclass(frozen=True)
class Fault:
    """Fail the `nth` (1-based) request of `kind` as `mode` says."""

    kind: str
    nth: int
    mode: str


@dataclass
class WireFaults:
    """Replaces `client`'s `Mux.ask`; records every request as (kind, subject)."""

    client: Client
    on: wire.TapPoint | None = None
    """The connection to put faults on, when not `client`'s own."""
    prefix: str | None = None
    """What "publish" requests start with (`<prefix>.events.`); `client`'s subject prefix if None."""
    faults: list[Fault] = field(default_factory=list)
    trace: list[tuple[str, str]] = field(default_factory=list)
    fired: list[Fault] = field(default_factory=list)
    # Requests the test itself makes through this client are not counted.
    paused: bool = False

    def __post_init__(self) -> None:
        self._prefix = self.prefix or self.client.config.nats.subject_prefix
        self._seen: dict[str, int] = {}
        # The deposed leader's copy of the stream (`freeze`).
        self._stale_seq = 0
        self._stale_get = b"{}"
        self._stale_direct: Reply | None = None
        self._stale_subject = ""
        self._installed = ExitStack()
        self._installed.enter_context(wire.intercept(self.on or self.client, on_request=self._ask))

    def add(self, *faults: Fault) -> WireFaults:
        self.faults.extend(faults)
        return self

    def reset(self, *faults: Fault) -> None:
        """Forget the trace and the faults; arm `faults` instead."""
        self.faults = list(faults)
        self.trace.clear()
        self.fired.clear()
        self._seen.clear()

    def numbered(self) -> list[str]:
        """The trace as "kind#n" (the n-th request of that kind), e.g.
        ["publish#1", "msg_get#1"]."""
        seen: dict[str, int] = {}
        out = []
        for kind, _ in self.trace:
            seen[kind] = seen.get(kind, 0) + 1
            out.append(f"{kind}#{seen[kind]}")
        return out

    def arm(self, kind: str, first: int, last: int, mode: str = STALE) -> WireFaults:
        """Arm `mode` on the `first`..`last` requests of `kind`."""
        return self.add(*(Fault(kind, n, mode) for n in range(first, last + 1)))

    async def freeze(self, stream: str, subject: str) -> None:
        """Take the copy of `stream` a leader paused now would answer from:
        its last sequence, and the last message on `subject` (as STREAM.MSG.GET
        and Direct Get answer it), read on a connection of the test's own."""
        info = json.loads(await jsadmin.stream_info(self.client, stream))
        self._stale_seq = int(info["state"]["last_seq"])
        get = b'{"last_by_subj":"%s"}' % subject.encode()
        self._stale_get = await jsadmin.api(self.client, f"$JS.API.STREAM.MSG.GET.{stream}", get)
        direct = await jsadmin.direct_get_last(self.client, stream, subject)
        self._stale_direct = Reply(direct.data, direct.headers)
        self._stale_subject = subject

    def _stale_last(self) -> int:
        message = json.loads(self._stale_get).get("message")
        return int(message["seq"]) if message else 0

    def _stale(self, kind: str, request: Request, real: Reply) -> Reply:
        """`real`, the live answer, as the frozen copy would have given it."""
        if kind == "publish":
            last = self._stale_last()
            return wire.error_reply(request, 400, 10071, f"wrong last sequence: {last}")
        if kind == "direct_get":
            seq = int((real.headers or {}).get("Nats-Sequence", "0"))
            assert self._stale_direct is not None, "freeze() first"
            return real if seq <= self._stale_seq else self._stale_direct
        if kind == "stream_info":
            reply = json.loads(real.data)
            state = reply.get("state", {})
            state["last_seq"] = min(int(state.get("last_seq", 0)), self._stale_seq)
            if not self._stale_last():
                (state.get("subjects") or {}).pop(self._stale_subject, None)
            return Reply(json.dumps(reply).encode())
        message = json.loads(real.data).get("message")
        if message is None or int(message["seq"]) <= self._stale_seq:
            return real
        if json.loads(request.payload).get("last_by_subj") == self._stale_subject:
            return Reply(self._stale_get)
        return wire.error_reply(request, 404, 10037, "no message found")

    def restore(self) -> None:
        self._installed.close()

    async def _ask(self, request: Request, forward: Forward) -> Reply:
        if self.paused:
            return await forward(request)
        kind = kind_of(request.subject, self._prefix)
        self.trace.append((kind, request.subject))
        n = self._seen[kind] = self._seen.get(kind, 0) + 1
        fault = next((f for f in self.faults if f.kind == kind and f.nth == n), None)
        if fault is None:
            return await forward(request)
        self.fired.append(fault)
        mode, what = fault.mode, request.what
        if mode == DROP_REPLY:
            await forward(request)
            raise StoreTimeout(f"{what}: no answer from NATS in time (reply dropped)")
        if mode == LOSE:
            raise StoreTimeout(f"{what}: no answer from NATS in time (request lost)")
        if mode == DISCONNECTED:
            raise StoreUnavailable(f"{what}: not connected to NATS (nothing sent)")
        if mode == STALE:
            return self._stale(kind, request, await forward(request))
        if mode in (STALE_IN_PROCESS, CONFLICTED):
            if mode == STALE_IN_PROCESS:
                await forward(request)
            return wire.error_reply(request, 400, 10164, "wrong last sequence")
        if kind == "direct_get" and mode in (UNAVAILABLE, REFUSED):
            # Direct Get answers with a status, not a JSON error.
            return wire.status_reply("503" if mode == UNAVAILABLE else "500")
        if mode == NO_RESPONDERS:
            return wire.status_reply("503")
        if mode == UNAVAILABLE:
            return wire.error_reply(request, 503, 10008, "JetStream system temporarily unavailable")
        if mode == REFUSED:
            return wire.error_reply(request, 500, 10999, "injected refusal")
        raise AssertionError(f"unknown fault mode {mode!r}")
