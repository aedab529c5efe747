"""The read path: an aggregate's events, the notification log, the last ids.

Everything is read by batch Direct Get (any replica), in pages. A replica
that lags serves a correct prefix; when this process knows a later stream
sequence for an aggregate (it wrote or read it), or wrote a later
notification, the rest is read from the stream leader, so a process always
reads its own writes.

Notification ids are stream sequences. A page of the notification log is
first read without headers (the cheap read), which gives only payloads and
the page's last sequence: when the count of messages equals the span of
sequences the page is dense and every id is known. Otherwise (tracking
records, snapshots or other applications share the stream) the page is read
again with headers, and the reader keeps doing that until a page is dense
again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from eventsourcing.persistence import Notification, StoredEvent

from angzarr_es.eventsourcing._layout import Layout
from angzarr_es.eventsourcing._records import (
    EventRecord,
    decode_event,
    decode_tracking,
    notification,
    stored_event,
)
from angzarr_es.eventsourcing._shared import Shared
from angzarr_es.store._cache import Position

__all__ = ["Reader"]

PAGE = 1000
"""Messages asked for per Direct Get."""
PAGE_BYTES = 1 << 20
"""Bytes asked for per Direct Get (the server stops a page there)."""


class Reader:
    """Reads of one factory (one connection, one stream)."""

    def __init__(self, shared: Shared) -> None:
        self._wire, self._stream, self._positions, self._written = shared
        # Whether the last notification page was dense (see the module doc).
        self._dense = True

    async def events(
        self,
        layout: Layout,
        originator_id: uuid.UUID | str,
        *,
        gt: int | None,
        lte: int | None,
        desc: bool,
        limit: int | None,
    ) -> list[StoredEvent]:
        """An aggregate's stored events, filtered and ordered as asked."""
        subject = layout.subject(originator_id)
        if desc and limit == 1:
            last = await self._last_event(subject)
            if last is None:
                return []
            if lte is None or last.originator_version <= lte:
                if gt is not None and last.originator_version <= gt:
                    return []
                return [stored_event(last, layout.id_value)]
        # Past the last version this process knows, only later messages can
        # match: the library's cache fast-forwards that way (one empty read).
        start = 1
        known = self._positions.get(subject)
        if gt is not None and known is not None and known.next_sequence - 1 <= gt:
            start = known.stream_seq + 1
        records = await self._events_from(subject, start)
        chosen = [
            r
            for r in records
            if (gt is None or r.originator_version > gt)
            and (lte is None or r.originator_version <= lte)
        ]
        if desc:
            chosen.reverse()
        if limit is not None:
            chosen = chosen[:limit]
        if not chosen:
            return []
        # One originator per subject: its id is made once.
        same = layout.id_value(chosen[0].originator_id)

        def originator(_: str) -> uuid.UUID | str:
            return same

        return [stored_event(r, originator) for r in chosen]

    async def _last_event(self, subject: str) -> EventRecord | None:
        reads = self._wire.reads
        got = await reads.direct_last(self._stream, subject)
        data, seq = (got[0], got[1]) if got is not None else (b"", 0)
        known = self._positions.get(subject)
        if known is not None and known.stream_seq > seq:
            leader = await reads.leader_last(self._stream, subject)
            if leader is None:
                return None
            data, seq = leader
        if not seq:
            return None
        record = decode_event(data, f"{subject} #{seq}")
        self._positions.put(subject, Position(record.originator_version + 1, seq))
        return record

    async def _events_from(self, subject: str, start: int) -> list[EventRecord]:
        """The subject's events from stream sequence `start` on."""
        reads = self._wire.reads
        records: list[EventRecord] = []
        last_seq = start - 1
        while True:
            payloads, last, more = await reads.direct_batch(
                self._stream, subject, start, PAGE, PAGE_BYTES
            )
            records.extend(decode_event(p, subject) for p in payloads)
            last_seq = last or last_seq
            if not more or not payloads:
                break
            start = last + 1
        known = self._positions.get(subject)
        if known is not None and known.stream_seq > last_seq:
            # A lagging replica answered: the rest from the leader.
            while (got := await reads.leader_next(self._stream, subject, last_seq + 1)) is not None:
                data, last_seq = got
                records.append(decode_event(data, f"{subject} #{last_seq}"))
        if records:
            self._positions.put(subject, Position(records[-1].originator_version + 1, last_seq))
        return records

    async def notifications(
        self,
        layout: Layout,
        *,
        start: int | None,
        limit: int,
        stop: int | None,
        topics: Sequence[str],
        inclusive_of_start: bool,
    ) -> list[Notification]:
        """The notification log from `start`, at most `limit` notifications up to `stop`."""
        seq = 1 if start is None else (start if inclusive_of_start else start + 1)
        seq = max(seq, 1)
        wanted = set(topics)
        ids: dict[str, uuid.UUID | str] = {}  # an aggregate's events share one id object

        def originator(text: str) -> uuid.UUID | str:
            found = ids.get(text)
            if found is None:
                found = ids[text] = layout.id_value(text)
            return found

        out: list[Notification] = []

        def take(notification_id: int, payload: bytes) -> bool:
            """Add one notification; whether the read is complete."""
            if stop is not None and notification_id > stop:
                return True
            record = decode_event(payload, f"{layout.filter} #{notification_id}")
            if not wanted or record.topic in wanted:
                out.append(notification(record, notification_id, originator))
            return len(out) == limit

        covered = seq - 1  # the stream is read up to here
        while len(out) < limit and (stop is None or seq <= stop):
            page, last, more = await self._page(layout.filter, seq, min(PAGE, limit - len(out)))
            covered = max(covered, last)
            for notification_id, payload in page:
                if take(notification_id, payload):
                    return out
            if not more or not page:
                break
            seq = page[-1][0] + 1
        # A lagging replica answered: what this process wrote after the end it
        # reached comes from the stream leader (a process reads its own writes).
        written = self._written.get(layout.filter, 0)
        while len(out) < limit and covered < written and (stop is None or covered < stop):
            got = await self._wire.reads.leader_next(self._stream, layout.filter, covered + 1)
            if got is None:
                break
            payload, covered = got
            if take(covered, payload):
                break
        return out

    async def _page(
        self, subjects: str, start: int, size: int
    ) -> tuple[list[tuple[int, bytes]], int, bool]:
        """(stream sequence, payload) of each message of one page, the page's
        last stream sequence, and whether more may follow."""
        reads = self._wire.reads
        if self._dense:
            payloads, last, more = await reads.direct_batch(
                self._stream, subjects, start, size, PAGE_BYTES
            )
            if not payloads or last - start + 1 == len(payloads):
                return list(zip(range(start, last + 1), payloads, strict=True)), last, more
            self._dense = False
        page, last, more = await reads.direct_sequenced(
            self._stream, subjects, start, size, PAGE_BYTES
        )
        self._dense = bool(page) and last - start + 1 == len(page)
        return page, last, more

    async def max_notification_id(self, layout: Layout) -> int | None:
        """The stream sequence of the recorder's last stored event (never
        before the last one this process wrote)."""
        got = await self._wire.reads.direct_last(self._stream, layout.filter)
        last = max(0 if got is None else got[1], self._written.get(layout.filter, 0))
        return last or None

    async def max_tracking_id(self, layout: Layout, application_name: str) -> int | None:
        """The last notification id tracked for `application_name`, from the
        stream leader (a process resuming must not read a lagging replica)."""
        subject = layout.tracking(application_name)
        got = await self._wire.reads.leader_last(self._stream, subject)
        if got is None:
            return None
        data, seq = got
        notification_id = decode_tracking(data, f"{subject} #{seq}")
        self._positions.put(subject, Position(notification_id + 1, seq))
        return notification_id
