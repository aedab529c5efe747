"""Reading stored messages: batch Direct Get (any replica) and leader reads.

Direct Get is answered by any replica with `allow_direct`, without headers
(`no_hdr`: nats-py's header parsing dominated a load); the leader's
STREAM.MSG.GET is the read that is never stale. A Direct Get nobody answers
is explained by the connection's shared STREAM.INFO probe (probe.py). On a
stream without `allow_direct` (made by hand; `use_leader`), the Direct Get
methods read the same messages from the leader instead, one request per message.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

from angzarr_es._nats import messages as m
from angzarr_es._nats.api import DIRECT_GET, DIRECT_GET_LAST, JetStream
from angzarr_es._nats.collector import Collector
from angzarr_es._nats.errors import status_error
from angzarr_es._nats.mux import Mux
from angzarr_es._nats.probe import StreamProbe
from angzarr_es.errors import StoreUnavailable

__all__ = ["Reads", "Stored"]

# Headers a commit carries (ours, plus trace context capped by angzarr_es.tracing):
# the per-message allowance when estimating how much of a Direct Get batch's
# max_bytes budget the server has counted.
HEADER_ALLOWANCE = 1024
# Direct Get pages in flight at once per connection: with the store's page
# sizes this keeps replies well under the server's per-client pending limit
# (64 MiB), past which it drops the connection as a slow consumer.
PAGES_IN_FLIGHT = 16


class Stored(NamedTuple):
    """A stored message as the store's append checks read it."""

    data: bytes
    msg_id: str
    append_id: str
    seq: int


class Reads:
    """Direct Get and leader reads of one connection."""

    def __init__(self, mux: Mux, js: JetStream, probe: StreamProbe) -> None:
        self._mux = mux
        self._js = js
        self._probe = probe
        self._pages = asyncio.Semaphore(PAGES_IN_FLIGHT)
        # Streams without allow_direct: their "Direct Gets" go to the leader.
        self._leader_only: set[str] = set()

    def use_leader(self, stream: str, leader: bool = True) -> None:
        """Serve the Direct Get reads of `stream` from its leader (it has no
        `allow_direct`), or again by Direct Get (`leader=False`)."""
        if leader:
            self._leader_only.add(stream)
        else:
            self._leader_only.discard(stream)

    # -- Direct Get: any replica -----------------------------------------------------

    async def direct_batch(
        self, stream: str, subject: str, start: int, batch: int, max_bytes: int
    ) -> tuple[list[bytes], int, bool]:
        """One page of a subject's messages from stream sequence `start`, without headers.

        Returns (payloads, stream sequence of the last one, whether more may follow).
        """
        if stream in self._leader_only:
            found, more = await self._leader_batch(stream, subject, start, batch, max_bytes)
            return [data for _, data in found], found[-1][0] if found else 0, more
        got = await self._page(stream, subject, start, batch, max_bytes, no_hdr=True)
        if got is None:
            return [], 0, False
        payloads = [data for data, _, _ in got.replies]
        return payloads, got.last_seq, _more_after(got, batch, max_bytes, len(subject))

    async def direct_sequenced(
        self, stream: str, subject: str, start: int, batch: int, max_bytes: int
    ) -> tuple[list[tuple[int, bytes]], int, bool]:
        """Like `direct_batch`, for a subject filter whose matches are not dense
        in the stream: each message comes with its stream sequence (read with
        headers, so the page's end count is exact).

        Returns ((stream sequence, payload) of each, last stream sequence, whether more may follow).
        """
        if stream in self._leader_only:
            found, more = await self._leader_batch(stream, subject, start, batch, max_bytes)
            return found, found[-1][0] if found else 0, more
        got = await self._page(stream, subject, start, batch, max_bytes, no_hdr=False)
        if got is None:
            return [], 0, False
        found = [(int(seq or 0), data) for data, _, seq in got.replies]
        return found, got.last_seq, got.pending > 0

    async def _page(
        self, stream: str, subject: str, start: int, batch: int, max_bytes: int, *, no_hdr: bool
    ) -> Collector | None:
        """One batch Direct Get ended by its `204 EOB`; None when nothing matched."""
        body = m.encode(
            m.DirectBatchRequest(
                seq=start, next_by_subj=subject, batch=batch, max_bytes=max_bytes, no_hdr=no_hdr
            )
        )
        what = f"read {subject}"
        async with self._pages:
            got = await self._mux.gather(DIRECT_GET.format(stream=stream), body, batch + 1, what)
        if got.status == "404":
            return None
        if got.status == "503":
            raise await self._probe.unavailable(what, stream, read=True)
        if got.status != "204":
            raise status_error(what, got.status or "?")
        return got

    async def direct_sequences(
        self, stream: str, subject: str, start: int, batch: int
    ) -> list[int]:
        """Stream sequences of up to `batch` messages on `subject` from `start`."""
        if stream in self._leader_only:
            found, _ = await self._leader_batch(stream, subject, start, batch, 0)
            return [seq for seq, _ in found]
        body = m.encode(m.DirectBatchRequest(seq=start, next_by_subj=subject, batch=batch))
        what = f"locate {subject}"
        got = await self._mux.gather(DIRECT_GET.format(stream=stream), body, batch + 1, what)
        if got.status == "503":  # a missing stream must not read as "no messages"
            raise await self._probe.unavailable(what, stream, read=True)
        if got.status not in ("204", "404"):
            raise status_error(what, got.status or "?")
        return [int(seq or 0) for _, _, seq in got.replies]

    async def direct_last(
        self, stream: str, subject: str, what: str = ""
    ) -> tuple[bytes, int, dict[str, str]] | None:
        """(payload, stream sequence, headers) of the last message on `subject`
        (a literal subject or a wildcard), by Direct Get.

        May be answered by any replica, including one that lags.
        """
        what = what or f"read last commit of {subject}"
        if stream in self._leader_only:
            got = await self._js.msg_get(stream, m.MsgGetRequest(last_by_subj=subject), what)
            return None if got is None else (got.data, got.seq, parse_headers(got.hdrs))
        try:
            msg = await self._mux.request(
                DIRECT_GET_LAST.format(stream=stream, subject=subject), what=what, repeatable=True
            )
        except StoreUnavailable as exc:
            if exc.code != 503:
                raise
            raise await self._probe.unavailable(what, stream, read=True) from exc
        headers = msg.headers or {}
        status = headers.get(m.STATUS)
        if status == "404":
            return None
        if status:
            raise status_error(what, status, headers.get(m.H_DESCRIPTION, ""))
        return msg.data, int(headers.get(m.H_SEQUENCE, "0")), headers

    # -- the stream leader -----------------------------------------------------------

    async def leader_last(self, stream: str, subject: str) -> tuple[bytes, int] | None:
        """Like `direct_last` but answered by the stream leader (never stale)."""
        got = await self._js.msg_get(
            stream, m.MsgGetRequest(last_by_subj=subject), f"read last commit of {subject}"
        )
        return None if got is None else (got.data, got.seq)

    async def leader_tail(self, stream: str, subject: str) -> Stored | None:
        """Like `leader_last`, with the ids the commit carries (whose it is)."""
        got = await self._js.msg_get(
            stream, m.MsgGetRequest(last_by_subj=subject), f"read last commit of {subject}"
        )
        return None if got is None else _stored(got)

    async def leader_next(self, stream: str, subject: str, seq: int) -> tuple[bytes, int] | None:
        """(payload, stream sequence) of the first message on `subject` at or after
        stream sequence `seq`, answered by the stream leader."""
        got = await self._js.msg_get(
            stream, m.MsgGetRequest(seq=seq, next_by_subj=subject), f"read last commit of {subject}"
        )
        return None if got is None else (got.data, got.seq)

    async def leader_message(
        self, stream: str, subject: str, *, seq: int = 0, start_time: str = ""
    ) -> Stored | None:
        """The first message on `subject` at or after stream sequence `seq`, or
        stored at or after `start_time` (RFC 3339), from the stream leader."""
        request = m.MsgGetRequest(seq=seq, next_by_subj=subject, start_time=start_time)
        got = await self._js.msg_get(stream, request, f"read {subject}")
        return None if got is None else _stored(got)

    async def _leader_batch(
        self, stream: str, subject: str, start: int, batch: int, max_bytes: int
    ) -> tuple[list[tuple[int, bytes]], bool]:
        """A Direct Get batch read from the leader, one message per request:
        ((stream sequence, payload) of each, whether more may follow)."""
        found: list[tuple[int, bytes]] = []
        seq, size = start, 0
        while len(found) < batch:
            got = await self._js.msg_get(
                stream, m.MsgGetRequest(seq=seq, next_by_subj=subject), f"read {subject}"
            )
            if got is None:
                return found, False
            found.append((got.seq, got.data))
            seq = got.seq + 1
            size += len(got.data) + len(subject) + HEADER_ALLOWANCE
            if max_bytes and size >= max_bytes:
                break
        return found, True


def _stored(got: m.StoredMessage) -> Stored:
    return Stored(
        got.data, header_value(got.hdrs, m.H_MSG_ID), header_value(got.hdrs, m.H_APPEND_ID), got.seq
    )


def _more_after(got: Collector, batch: int, max_bytes: int, subject_len: int) -> bool:
    """Whether messages may remain after a no_hdr Direct Get batch.

    The EOB's Nats-Num-Pending is, with no_hdr, the count at the *start* of the
    batch (nats-server decrements it only when it sends headers), unless the
    stream grew meanwhile: then it is recounted after the last message sent.
    0 means nothing remains either way; anything but the count received means
    more remain. Only when it equals the count received is it ambiguous, and
    then the batch stopped early only if it was full or hit max_bytes.
    """
    sent = len(got.replies)
    if sent == batch:
        return True
    if got.pending == 0:
        return False
    if got.pending != sent:
        return True
    spent = got.size + sent * (subject_len + HEADER_ALLOWANCE)
    return spent >= max_bytes


def parse_headers(raw: bytes) -> dict[str, str]:
    """A raw `NATS/1.0` header block as a dict (the last of repeated names)."""
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n")[1:]:
        k, sep, v = line.partition(b":")
        if sep:
            out[k.strip().decode(errors="replace")] = v.strip().decode(errors="replace")
    return out


def header_value(raw: bytes, name: str) -> str:
    """One header's value from a raw `NATS/1.0` header block ("" if absent)."""
    key = name.lower().encode()
    for line in raw.split(b"\r\n")[1:]:
        k, sep, v = line.partition(b":")
        if sep and k.strip().lower() == key:
            return v.strip().decode(errors="replace")
    return ""
