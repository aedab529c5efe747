"""A faster reading of MSG and HMSG for nats-py's protocol parser.

nats-py's `Parser` tries a regular expression per operation, copies every
payload out of a `bytearray` twice, deletes each consumed operation from the
front of its buffer and awaits a coroutine per message. A batch Direct Get of
1,000 commits is 1,000 messages, so that per-message work was half the time of
a load of small commits (profiled with cProfile on `Wire.direct_batch`).

`FastParser` reads MSG/HMSG operations straight from the received chunk with
`find` and `split`, slices each payload once, and hands the messages of the
subscriptions the store serves directly (`connection.FastClient.direct`) to their
handler without a coroutine. Anything else (PING, PONG, +OK, -ERR, INFO, or an
operation written in a form it does not expect) is left to nats-py's own
parser, byte for byte as before; `tests/unit/test_parser.py` checks that both
parsers dispatch the same calls for arbitrary streams cut at arbitrary points.

`take` is the same dispatch, synchronous and for the leading messages of a
chunk only: the connection offers it the bytes it receives while nats-py's
reader task is idle with nothing buffered (`connection._read_sooner`), which saves
the pass of the event loop that task needs to wake up. The tests feed the same
streams through `take` first, including chunks that start inside a message.

One difference is known and left: nats-py's expressions let a separator run
across a line break, so a malformed MSG line (too few fields) followed by a
line of digits is one message to nats-py, while FastParser hands nats-py the
malformed line alone and nats-py then refuses it. No server writes such lines.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

__all__ = ["FastParser"]

# (subject, reply, payload, parsed headers): see _wire.RawHandler.
Handler = Callable[[bytes, bytes, bytes, "dict[str, str] | None"], None]
# A message's line: (subject, sid, reply, header size, total size).
Frame = tuple[bytes, int, bytes, int, int]

_MSG = b"MSG "
_MSG_OP = b"MSG"
_HMSG = b"HMSG "
_CRLF = b"\r\n"
_DIGITS = range(48, 58)  # the bytes b"0".."9"
# Longer numbers than any sid or size can be (and than int() parses from a long
# string) are left to nats-py.
_MAX_DIGITS = 18
_log = logging.getLogger(__name__)
_reports: set[asyncio.Future[None]] = set()
_VERSION = b"NATS/1.0"
# The ASCII characters str.isspace() takes for blanks (\x1c-\x1f included).
_SPACES = bytes(c for c in range(128) if chr(c).isspace())


def parse_headers(raw: bytes) -> dict[str, str] | None:
    """A message's header block as nats-py's `Client._process_headers` reads it.

    An inline status (`NATS/1.0 404 No Messages`) becomes `Status` and
    `Description`; then one entry per `Name: value` line (names with spaces
    or non-ASCII bytes skipped, values decoded leniently). Synchronous, and
    without nats-py's per-character scan of each name.
    """
    if not raw.startswith(_VERSION):
        return None
    out: dict[str, str] = {}
    lines = raw[len(_VERSION) :].split(_CRLF)
    status_line = lines[0]
    if status_line[:1] == b" ":
        # nats-py: a 3-character status, then one separator, then the description.
        status = status_line[1:4].strip().decode(errors="replace")
        if status.isdigit():
            out["Status"] = status
        description = status_line[5:]
        if description:
            out["Description"] = description.decode(errors="replace")
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = name.strip()
        if not key.isascii() or len(key.translate(None, _SPACES)) != len(key):
            continue
        out[key.decode()] = value.strip().decode("utf-8", "replace")
    return out or None


class FastParser(Parser):
    """nats-py's parser with a fast path for messages; see the module doc."""

    def __init__(self, nc: Any, direct: dict[int, Handler]) -> None:
        self._direct = direct
        self._need = 0
        # The last plain MSG line up to its size ("MSG <subject> <sid> ") and
        # what it parsed to: the messages of a batch reply share it, so the
        # next line needs only its size read.
        self._prefix = b""
        self._known: tuple[bytes, int] = (b"", 0)
        super().__init__(nc)

    @property
    def line_prefix(self) -> bytes:
        """The MSG line up to its size that the last plain message started
        with (the messages of a batch reply share it); b"" after a reset."""
        return self._prefix

    def reset(self) -> None:
        super().reset()
        self._need = 0
        self._prefix = b""

    async def parse(self, data: bytes = b"") -> None:
        while True:
            if self.state != AWAITING_CONTROL_LINE:
                # nats-py has read a message's line (an operation it parsed
                # for us): give it exactly the bytes that complete the message.
                need = self.needed + 2 - len(self.buf)
                if need > len(data):
                    await super().parse(data)
                    return
                await super().parse(data[:need])
                data = data[need:]
                if self.state != AWAITING_CONTROL_LINE or not data:
                    return
            rest = await self._fast(data)
            if rest is None:
                return
            data = rest

    def take(self, data: bytes) -> int:
        """Dispatch the whole messages of direct subscriptions at the start of
        `data`, if nothing received earlier is still waiting to be parsed.

        Returns how many bytes it consumed; the rest is for `parse`, in order.
        """
        if self.buf or self._need or self.state != AWAITING_CONTROL_LINE:
            return 0
        return self._run(data, 0)[0]

    async def _fast(self, data: bytes) -> bytes | None:
        """Dispatch the messages in `data`; hand any other operation, one at a
        time, to nats-py. Returns the bytes after an operation that left
        nats-py waiting for a message's payload, or None when all is consumed
        or buffered."""
        buf = self.buf
        if buf:
            buf.extend(data)
            if len(buf) < self._need:
                return None  # still short of the message that is arriving
            data = bytes(buf)
            buf.clear()
        self._need = 0
        size = len(data)
        pos = 0
        while pos < size:
            pos, end, frame = self._run(data, pos)
            if end < 0:
                break
            if frame is None:
                # Not a message, or one written in a form this parser does
                # not take: nats-py parses that one operation (or raises).
                buf.extend(data[pos : end + 2])
                pos = end + 2
                await super().parse()
                if self.state != AWAITING_CONTROL_LINE:
                    return data[pos:]
                continue
            subject, sid, reply, hsize, total = frame
            start = end + 2
            stop = start + total
            if stop + 2 > size:
                self._need = stop + 2 - pos
                break
            pos = stop + 2
            await self.nc._process_msg(
                sid,
                subject,
                reply,
                data[start + hsize : stop],
                data[start : start + hsize] if hsize else None,
            )
        if pos < size:
            buf.extend(data[pos:] if pos else data)
        return None

    def _run(self, data: bytes, pos: int) -> tuple[int, int, Frame | None]:
        """Dispatch the whole messages of direct subscriptions from `pos` on.

        Stops at anything else and returns (its position, the end of its line,
        its frame): the end is -1 when the data ran out first (no whole line
        left), the frame None when the line is not a message this parser reads
        (else the message is incomplete, or not for a direct subscription).
        """
        direct = self._direct
        size = len(data)
        msgs = nbytes = 0
        prefix = self._prefix
        cut = len(prefix)
        try:
            while pos < size:
                end = data.find(_CRLF, pos)
                if end < 0:
                    break
                if (
                    cut
                    and data.startswith(prefix, pos)
                    and (digits := data[pos + cut : end]).isdigit()
                    and len(digits) <= _MAX_DIGITS
                ):
                    # Same subject and sid as the last plain MSG: only the size differs.
                    subject, sid = self._known
                    reply, hsize, total = b"", 0, int(digits)
                else:
                    frame = args = None
                    if data.startswith(_MSG, pos) or data.startswith(_HMSG, pos):
                        args = data[pos:end].split()
                        frame = _frame(args, data[end - 1])
                    if frame is None or args is None:
                        return pos, end, None
                    subject, sid, reply, hsize, total = frame
                    if len(args) == 4 and args[0] == _MSG_OP:
                        # A plain MSG; its prefix is reusable if written with single spaces.
                        head = 6 + len(args[1]) + len(args[2])
                        if end - pos == head + len(args[3]):
                            prefix = self._prefix = data[pos : pos + head]
                            cut = head
                            self._known = (subject, sid)
                start = end + 2
                stop = start + total
                handler = direct.get(sid)
                if handler is None or stop + 2 > size:
                    return pos, end, (subject, sid, reply, hsize, total)
                pos = stop + 2
                msgs += 1
                nbytes += total - hsize
                try:
                    if hsize:
                        headers = parse_headers(data[start : start + hsize])
                        handler(subject, reply, data[start + hsize : stop], headers)
                    else:
                        handler(subject, reply, data[start:stop], None)
                except Exception as exc:  # noqa: BLE001 - reported, and the stream goes on
                    report_handler_error(self.nc, exc)
            return pos, -1, None
        finally:
            if msgs:
                stats = self.nc.stats
                stats["in_msgs"] += msgs
                stats["in_bytes"] += nbytes


def _frame(args: list[bytes], before_crlf: int) -> Frame | None:
    """(subject, sid, reply, header size, total size) of a MSG/HMSG line split
    into `args`, or None if nats-py's own expressions would not take it as is."""
    if before_crlf not in _DIGITS:
        return None  # nats-py requires the size's digits right before the line's end
    count = len(args)
    if args[0] == b"HMSG" and count in (5, 6):
        head, total = args[count - 2], args[count - 1]
        if not head.isdigit() or len(head) > _MAX_DIGITS:
            return None
        hsize = int(head)
        reply = args[3] if count == 6 else b""
    elif args[0] == b"MSG" and count in (4, 5):
        total, hsize = args[count - 1], 0
        reply = args[3] if count == 5 else b""
    else:
        return None
    sid = args[2]
    if not (total.isdigit() and sid.isdigit()) or max(len(total), len(sid)) > _MAX_DIGITS:
        return None
    size = int(total)
    if hsize > size:
        return None
    return args[1], int(sid), reply, hsize, size


def report_handler_error(nc: Any, exc: Exception) -> None:
    """A direct handler failed: tell the client's error callback (as nats-py
    does for a subscription callback) and keep reading the connection."""
    _log.error("angzarr_es: inbox handler failed", exc_info=exc)
    callback = getattr(nc, "_error_cb", None)
    if callback is not None:
        task = asyncio.ensure_future(callback(exc))
        _reports.add(task)
        task.add_done_callback(_reports.discard)
