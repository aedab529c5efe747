"""A faster reading of MSG and HMSG for nats-py's protocol parser.

nats-py's `Parser` tries a regular expression per operation, copies every
payload out of a `bytearray` twice, deletes each consumed operation from the
front of its buffer and awaits a coroutine per message. A batch Direct Get of
1,000 commits is 1,000 messages, so that per-message work was half the time of
a load of small commits (profiled with cProfile on `Wire.direct_batch`).

`FastParser` reads MSG/HMSG operations straight from the received chunk with
`find` and `split`, slices each payload once, and hands the messages of the
subscriptions the store serves directly (`_wire._Client.direct`) to their
handler without a coroutine. Anything else (PING, PONG, +OK, -ERR, INFO, or an
operation written in a form it does not expect) is left to nats-py's own
parser, byte for byte as before; `tests/test_parser.py` checks that both
parsers dispatch the same calls for arbitrary streams cut at arbitrary points.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nats.errors import ProtocolError
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

__all__ = ["FastParser"]

# (subject, reply, payload, parsed headers): see _wire.RawHandler.
Handler = Callable[[bytes, bytes, bytes, "dict[str, str] | None"], None]

_MSG = b"MSG "
_HMSG = b"HMSG "
_CRLF = b"\r\n"
_VERSION = b"NATS/1.0"


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
        if not key.isascii() or any(c in b" \t\r\n\x0b\x0c" for c in key):
            continue
        out[key.decode()] = value.strip().decode("utf-8", "replace")
    return out or None


class FastParser(Parser):
    """nats-py's parser with a fast path for messages; see the module doc."""

    def __init__(self, nc: Any, direct: dict[int, Handler]) -> None:
        self._direct = direct
        self._need = 0
        super().__init__(nc)

    def reset(self) -> None:
        super().reset()
        self._need = 0

    async def parse(self, data: bytes = b"") -> None:
        buf = self.buf
        if self.state != AWAITING_CONTROL_LINE:
            await super().parse(data)  # nats-py is in the middle of a message
            return
        if buf:
            buf.extend(data)
            if len(buf) < self._need:
                return  # still short of the message that is arriving
            data = bytes(buf)
            buf.clear()
        self._need = 0
        direct = self._direct
        nc = self.nc
        size = len(data)
        pos = msgs = nbytes = 0
        while pos < size:
            if data.startswith(_MSG, pos):
                headed = False
            elif data.startswith(_HMSG, pos):
                headed = True
            else:
                break
            end = data.find(_CRLF, pos)
            if end < 0:
                break
            args = data[pos:end].split()
            count = len(args)
            if headed:
                if count == 6:
                    reply = args[3]
                elif count == 5:
                    reply = b""
                else:
                    raise ProtocolError("nats: malformed HMSG")
                head, total = args[count - 2], args[count - 1]
                if not (head.isdigit() and total.isdigit()):
                    raise ProtocolError("nats: malformed HMSG")
                hsize = int(head)
            else:
                if count == 5:
                    reply = args[3]
                elif count == 4:
                    reply = b""
                else:
                    raise ProtocolError("nats: malformed MSG")
                total = args[count - 1]
                if not total.isdigit():
                    raise ProtocolError("nats: malformed MSG")
                hsize = 0
            sid_arg = args[2]
            if not sid_arg.isdigit():
                raise ProtocolError("nats: malformed MSG")
            start = end + 2
            stop = start + int(total)
            if stop + 2 > size:
                self._need = stop + 2 - pos
                break
            if hsize > stop - start:
                raise ProtocolError("nats: malformed HMSG")
            pos = stop + 2
            sid = int(sid_arg)
            handler = direct.get(sid)
            if handler is not None:
                msgs += 1
                nbytes += stop - start - hsize
                if hsize:
                    payload = data[start + hsize : stop]
                    handler(args[1], reply, payload, parse_headers(data[start : start + hsize]))
                else:
                    handler(args[1], reply, data[start:stop], None)
            elif hsize:
                await nc._process_msg(
                    sid, args[1], reply, data[start + hsize : stop], data[start : start + hsize]
                )
            else:
                await nc._process_msg(sid, args[1], reply, data[start:stop], None)
        if msgs:
            stats = nc.stats
            stats["in_msgs"] += msgs
            stats["in_bytes"] += nbytes
        if pos < size:
            buf.extend(data[pos:] if pos else data)
            if not self._need:
                # Not a message, or a message's line not yet complete: nats-py
                # parses what it recognises and keeps the rest.
                await super().parse()
