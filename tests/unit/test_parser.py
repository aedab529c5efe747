"""FastParser dispatches exactly what nats-py's own parser dispatches, for any
stream of protocol operations cut into chunks at any points."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NatsClient
from nats.errors import ProtocolError
from nats.protocol.parser import Parser

from angzarr_es._nats.parser import FastParser, parse_headers

DIRECT_SID = 7


class Recorder:
    """Stands in for the nats-py client: records what the parser hands over."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.stats = {"in_msgs": 0, "in_bytes": 0}

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        # Headers as nats-py's client reads them (its own method, run on this stand-in).
        parsed = await NatsClient._process_headers(self, headers)  # type: ignore[arg-type]
        self.calls.append(("msg", sid, bytes(subject), bytes(reply), data, parsed))
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)

    _parse_header_lines = staticmethod(NatsClient._parse_header_lines)

    async def _error_cb(self, exc: Exception) -> None:
        raise AssertionError(f"nats-py could not read headers: {exc}")

    async def _process_ping(self) -> None:
        self.calls.append(("ping",))

    async def _process_pong(self) -> None:
        self.calls.append(("pong",))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.calls.append(("info", info))

    async def _process_err(self, err: str) -> None:
        self.calls.append(("err", err))


def direct_handler(rec: Recorder) -> Any:
    def handle(subject: bytes, reply: bytes, data: bytes, headers: object) -> None:
        rec.calls.append(("msg", DIRECT_SID, bytes(subject), bytes(reply), data, headers))

    return handle


tokens = st.text("abcXYZ019_-$>*", min_size=1, max_size=12)
subjects = st.lists(tokens, min_size=1, max_size=4).map(".".join)
payloads = st.binary(max_size=80) | st.sampled_from(
    [b"MSG x 1 3\r\n", b"\r\n\r\n", b"PING\r\n", b"MSG _INBOX.z %d 2\r\nzz\r\n" % DIRECT_SID]
)


header_lines = st.lists(
    st.tuples(
        st.sampled_from(
            ["Nats-Num-Pending", "Nats-Last-Sequence", "K", "x y", "Ü", "a\tb", "a\x1fb"]
        ),
        tokens,
    ),
    max_size=3,
).map(lambda kv: "".join(f"{k}: {v}\r\n" for k, v in kv))
statuses = st.sampled_from(
    [
        "",
        " 204 EOB",
        " 404 Message Not Found",
        " 503",
        " 408 Request Timeout",
        " 100 Idle Heartbeat",
    ]
)


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    status, lines = draw(statuses), draw(header_lines)
    if status == " 503":
        # nats-py reads the header lines after a bare status into its
        # Description ("\nName: value"); parse_headers reads them as headers
        # (test_a_bare_status_keeps_its_headers). Elsewhere both agree.
        lines = ""
    return f"NATS/1.0{status}\r\n{lines}\r\n".encode()


@st.composite
def operations(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["msg", "msg", "hmsg", "ping", "pong", "ok", "info", "err"]))
    if kind in ("msg", "hmsg"):
        subject = draw(subjects).encode()
        sid = draw(st.sampled_from([1, 2, DIRECT_SID]))
        reply = draw(st.none() | subjects)
        parts = [subject, str(sid).encode()] + ([reply.encode()] if reply else [])
        payload = draw(payloads)
        if kind == "msg":
            return (
                b"MSG "
                + b" ".join([*parts, str(len(payload)).encode()])
                + b"\r\n"
                + payload
                + b"\r\n"
            )
        header = draw(header_blocks())
        sizes = [str(len(header)).encode(), str(len(header) + len(payload)).encode()]
        return b"HMSG " + b" ".join(parts + sizes) + b"\r\n" + header + payload + b"\r\n"
    return {
        "ping": b"PING\r\n",
        "pong": b"PONG\r\n",
        "ok": b"+OK\r\n",
        "info": b'INFO {"server_id":"x","max_payload":1048576}\r\n',
        "err": b"-ERR 'Permissions Violation for Subscription to \"x\"'\r\n",
    }[kind]


# Where a stream is cut into the chunks the parser receives.
CUTS = st.lists(st.integers(0, 10_000), max_size=12)


def chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    pieces, last = [], 0
    for point in [*points, len(stream)]:
        pieces.append(stream[last:point])
        last = point
    return [p for p in pieces if p]


async def feed(parser: Any, pieces: list[bytes], take: bool = False) -> None:
    """Parse `pieces` in order; with `take`, each is first offered to
    `FastParser.take` (as `_nats.connection._read_sooner` does as bytes arrive) and only
    what it leaves is parsed."""
    for piece in pieces:
        if take:
            piece = piece[parser.take(piece) :]
            if not piece:
                continue
        await parser.parse(piece)


def run(
    pieces: list[bytes], direct: bool, *, errors: bool = False, take: bool = False
) -> tuple[Any, Any]:
    """(nats-py's, FastParser's) calls for `pieces`; with `errors`, each with
    the protocol error the parser stopped at (else an error fails the test)."""
    plain_rec, fast_rec = Recorder(), Recorder()
    handlers = {DIRECT_SID: direct_handler(fast_rec)} if direct else {}
    plain = fed(Parser(plain_rec), plain_rec, pieces, errors)
    fast = fed(FastParser(fast_rec, handlers), fast_rec, pieces, errors, take)
    assert fast_rec.stats == plain_rec.stats
    return plain, fast


@settings(deadline=None, max_examples=400)
@given(
    ops=st.lists(operations(), min_size=1, max_size=25),
    cuts=CUTS,
    direct=st.booleans(),
    take=st.booleans(),
)
def test_fast_parser_dispatches_what_nats_py_dispatches(
    ops: list[bytes], cuts: list[int], direct: bool, take: bool
) -> None:
    stream = b"".join(ops)
    plain, fast = run(chunked(stream, cuts), direct, take=take)
    assert fast == plain
    assert len([c for c in fast if c[0] == "msg"]) == sum(
        op.startswith((b"MSG", b"HMSG")) for op in ops
    )


@settings(deadline=None, max_examples=300)
@given(block=header_blocks())
def test_headers_read_as_nats_py_reads_them(block: bytes) -> None:
    rec = Recorder()
    expected = asyncio.run(NatsClient._process_headers(rec, block))  # type: ignore[arg-type]
    assert parse_headers(block) == expected


def test_a_bare_status_keeps_its_headers() -> None:
    got = parse_headers(b"NATS/1.0 503\r\nNats-Last-Sequence: 5\r\n\r\n")
    assert got == {"Status": "503", "Nats-Last-Sequence": "5"}


def test_a_large_message_in_many_chunks_is_assembled_once() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    stream = b"MSG big.subject 1 %d\r\n%b\r\nPING\r\n" % (len(payload), payload)
    pieces = [stream[i : i + 32768] for i in range(0, len(stream), 32768)]
    plain, fast = run(pieces, direct=False)
    assert fast == plain
    assert fast[0][4] == payload


def outcome(parser: Any, rec: Recorder, line: bytes) -> object:
    try:
        asyncio.run(parser.parse(line))
    except ProtocolError as exc:
        return ("error", type(exc))
    return ("calls", rec.calls)


@pytest.mark.parametrize(
    "line",
    [
        b"MSG a 1 -3\r\nabc\r\n",
        b"MSG a x 3\r\nabc\r\n",
        b"MSG a 1 2 3 4\r\nabc\r\n",
        b"MSG a 1 3 \r\nabc\r\n",
        b"MSG\ta\t1\t3\r\nabc\r\nPING\r\n",
        b"MSG a 1 3\x0b\r\nabc\r\n",
        b"MSG a 1 3\x0c\r\nabc\r\n",
        b"MSG a 1 3\n\r\nabc\r\n",
        b"MSG a 1 " + b"9" * 5000 + b"\r\nabc\r\n",
        b"MSG a 1 3\r\nabc\r\nMSG a 1 " + b"9" * 5000 + b"\r\nabc\r\n",  # after a prefix
        b"MSG a " + b"7" * 5000 + b" 3\r\nabc\r\n",
        b"HMSG a 1 " + b"1" * 5000 + b" 3\r\nabc\r\n",
        b"NOPE\r\n",
    ],
)
def test_odd_lines_get_the_outcome_nats_py_gives_them(line: bytes) -> None:
    plain_rec, fast_rec = Recorder(), Recorder()
    expected = outcome(Parser(plain_rec), plain_rec, line)
    assert outcome(FastParser(fast_rec, {}), fast_rec, line) == expected


def test_the_fast_path_resumes_after_an_operation_it_hands_over() -> None:
    payload = b"x" * 200
    msg = b"MSG _INBOX.t.1 %d %d\r\n%b\r\n" % (DIRECT_SID, len(payload), payload)
    stream = b"PONG\r\n" + msg * 2000
    rec = Recorder()
    fast: list[bytes] = []
    parser = FastParser(rec, {DIRECT_SID: lambda s, r, d, h: fast.append(d)})
    asyncio.run(feed(parser, [stream[i : i + 32768] for i in range(0, len(stream), 32768)]))
    assert rec.calls[0] == ("pong",)
    assert len(fast) == 2000  # none through nats-py's slow path (rec would record them)
    assert len(rec.calls) == 1


def test_a_failing_handler_is_reported_and_the_stream_goes_on() -> None:
    reported: list[BaseException] = []

    class Reporting(Recorder):
        async def _error_cb(self, exc: Exception) -> None:
            reported.append(exc)

    rec = Reporting()
    seen: list[bytes] = []

    def handler(subject: bytes, reply: bytes, data: bytes, headers: object) -> None:
        if data == b"bad":
            raise RuntimeError("handler bug")
        seen.append(data)

    stream = b"".join(
        b"MSG s %d %d\r\n%b\r\n" % (DIRECT_SID, len(d), d) for d in (b"one", b"bad", b"two")
    )

    async def go() -> None:
        await FastParser(rec, {DIRECT_SID: handler}).parse(stream)
        await asyncio.sleep(0)  # the report is scheduled on the loop

    asyncio.run(go())
    assert seen == [b"one", b"two"]
    assert [str(e) for e in reported] == ["handler bug"]
    assert rec.stats["in_msgs"] == 3


# Horizontal blanks (what nats-py's MSG pattern allows between fields) as "_".
_NO_BLANKS = bytes.maketrans(b" \t\x0b\x0c", b"____")


@st.composite
def batch_replies(draw: st.DrawFn) -> bytes:
    """Runs of messages to one subject and sid, as a batch reply arrives, with
    lines that share the run's prefix but are not plain MSGs of it mixed in."""
    subject = draw(subjects).encode()
    sid = str(draw(st.sampled_from([1, DIRECT_SID]))).encode()
    prefix = b"MSG " + subject + b" " + sid + b" "
    out = []
    for _ in range(draw(st.integers(1, 12))):
        payload = draw(payloads)
        size = str(len(payload)).encode()
        line = draw(
            st.sampled_from(
                [
                    prefix + size,  # the run's own form
                    prefix + size,
                    prefix + b"0" + size,  # leading zero: still a size
                    prefix + b"reply.x " + size,  # the prefix, then a reply
                    prefix.replace(b" ", b"\t", 1) + size,  # another separator
                    prefix.replace(b" ", b"  ", 1) + size,  # a wider one
                    prefix.replace(b" ", b"  ", 1)[:-1] + size,  # wider, the size glued on
                    prefix[:-1] + size,  # the size glued to the sid: not a MSG
                    b"MSG " + subject + b" " + sid + b"0 " + size,  # a longer sid
                    b"MSG " + subject + b".y " + sid + b" " + size,  # a longer subject
                ]
            )
        )
        if len(line.split()) < 4:
            # Too few fields: nats-py would read the next line into it (see
            # the parser's module doc); a payload that cannot end such a
            # line (no blank before a size) keeps both parsers on this line.
            payload = b"x" + payload.translate(_NO_BLANKS)
        out.append(line + b"\r\n" + payload + b"\r\n")
        if draw(st.integers(0, 5)) == 0:
            out.append(draw(operations()))
    return b"".join(out)


@settings(deadline=None, max_examples=400)
@given(
    runs=st.lists(batch_replies(), min_size=1, max_size=3),
    cuts=CUTS,
    direct=st.booleans(),
    take=st.booleans(),
)
def test_runs_of_one_subject_are_read_as_nats_py_reads_them(
    runs: list[bytes], cuts: list[int], direct: bool, take: bool
) -> None:
    plain, fast = run(chunked(b"".join(runs), cuts), direct, errors=True, take=take)
    assert fast == plain


def fed(
    parser: Any, rec: Recorder, pieces: list[bytes], errors: bool = True, take: bool = False
) -> Any:
    """What the parser handed over (and, with `errors`, the protocol error it
    stopped at, if any)."""
    try:
        asyncio.run(feed(parser, pieces, take))
    except ProtocolError as exc:
        if not errors:
            raise
        return rec.calls, type(exc)
    return (rec.calls, None) if errors else rec.calls


def test_a_batch_reply_reuses_the_line_it_has_seen() -> None:
    rec = Recorder()
    parser = FastParser(rec, {DIRECT_SID: direct_handler(rec)})
    stream = b"".join(
        b"MSG _INBOX.a.1 %d %d\r\n%s\r\n" % (DIRECT_SID, i, b"x" * i) for i in range(50)
    )
    asyncio.run(feed(parser, [stream]))
    assert [len(c[4]) for c in rec.calls] == list(range(50))
    assert parser.line_prefix == b"MSG _INBOX.a.1 %d " % DIRECT_SID


def test_take_dispatches_the_leading_direct_messages_and_leaves_the_rest() -> None:
    rec = Recorder()
    parser = FastParser(rec, {DIRECT_SID: direct_handler(rec)})
    direct = b"MSG _INBOX.a %d 2\r\nab\r\n" % DIRECT_SID
    other = b"MSG sub.x 1 2\r\ncd\r\n"
    chunk = direct + direct + other + direct
    taken = parser.take(chunk)
    assert taken == 2 * len(direct)  # stops at the first message it must not dispatch
    assert [c[4] for c in rec.calls] == [b"ab", b"ab"]
    assert parser.take(direct[:-3]) == 0  # an incomplete message is left whole
    asyncio.run(parser.parse(direct[:-3]))
    assert parser.take(direct) == 0  # bytes of an earlier message are still buffered


@settings(deadline=None, max_examples=300)
@given(
    ops=st.lists(operations(), min_size=1, max_size=15),
    joins=st.lists(st.booleans(), max_size=40),
    direct=st.booleans(),
)
def test_take_never_reads_into_a_message_that_is_still_arriving(
    ops: list[bytes], joins: list[bool], direct: bool
) -> None:
    # Every message cut where its payload starts (payloads may look like
    # messages), some neighbouring pieces joined again.
    pieces: list[bytes] = []
    for op in ops:
        cut = op.index(b"\r\n") + 2 if op.startswith((b"MSG", b"HMSG")) else len(op)
        pieces += [op[:cut], op[cut:]]
    merged: list[bytes] = []
    for piece, join in zip(pieces, joins + [False] * len(pieces), strict=False):
        if join and merged:
            merged[-1] += piece
        else:
            merged.append(piece)
    plain, fast = run([p for p in merged if p], direct, take=True)
    assert fast == plain
