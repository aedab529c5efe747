"""The write path: stored events and tracking records, one message each.

An insert is one publish when it is one message, else one atomic batch (all
messages stored with consecutive stream sequences, or none): a batch costs
about 4 ms on file storage against 0.2 ms for a publish, so it is used only
when more than one message must be atomic.

Concurrency is checked by the server: the first message of each subject (an
aggregate sequence, or an upstream application's tracking records) carries
`Nats-Expected-Last-Subject-Sequence`, the stream sequence of the subject's
last record as this process knows it (from a cache fed by reads and writes,
one Direct Get on a miss, or nothing for an aggregate's first version). A
refusal (10071, 10164) re-reads the subjects from the stream leader: an
insert whose version (or notification id) is not after the last one raises
the library's `IntegrityError`; otherwise the insert is sent again at the new
positions.

Lost acknowledgements: the same messages are sent again, with the same
`Nats-Msg-Id` on the first one (random per insert). A resent batch that was
stored is refused whole (10201); a resent single message is refused as a
conflict on a single server (the expected sequence is checked before the
duplicate); either way the first message after the expected sequence is
read from the leader, and when it carries our id the insert succeeded.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from typing import NamedTuple

from eventsourcing.persistence import (
    DataError,
    IntegrityError,
    NotSupportedError,
    StoredEvent,
    Tracking,
)

from angzarr_es._nats import messages as m
from angzarr_es._nats.errors import (
    BATCH_DUPLICATE_MSG_ID,
    BATCH_INCOMPLETE,
    CONFLICT_CODES,
    DUPLICATE_IN_PROCESS,
    TOO_MANY_BATCHES,
)
from angzarr_es._nats.wire import BatchMessage
from angzarr_es._provision import ATOMIC_SERVER
from angzarr_es.errors import StoreError, StoreTimeout, StoreUnavailable
from angzarr_es.eventsourcing._layout import Layout
from angzarr_es.eventsourcing._records import (
    decode_event,
    decode_tracking,
    encode_event,
    encode_tracking,
)
from angzarr_es.eventsourcing._shared import Shared
from angzarr_es.store._cache import NEW, Position

__all__ = ["MAX_MESSAGES", "Writer"]

MAX_MESSAGES = 1000
"""Messages in one atomic batch (the server's limit)."""
ATTEMPTS = 3
"""Sends of one insert when acknowledgements are lost."""
BACKOFFS = 10
"""Waits for a busy server (batches in flight, an earlier attempt still proposed)."""
ROUNDS = 16
"""Conflicts after which an insert whose versions are still free gives up."""
BATCHES_IN_FLIGHT = 32
"""Batches one factory has open at once (a stream takes at most 50)."""
_HEADROOM = 512
"""Bytes per message for its subject and headers, against the server's max_payload."""


class Part(NamedTuple):
    """What an insert writes on one subject."""

    numbers: list[int]
    """Versions of the events, or the tracking record's notification id, in order."""
    tracking: bool


class Writer:
    """Inserts of one factory (one connection, one stream)."""

    def __init__(self, shared: Shared) -> None:
        self._wire, self._stream, self._positions, self._written = shared
        self._batches = asyncio.Semaphore(BATCHES_IN_FLIGHT)

    async def insert(
        self, layout: Layout, events: Sequence[StoredEvent], tracking: Tracking | None
    ) -> list[int]:
        """Store `events` (and `tracking`) atomically; their notification ids.

        Raises:
            IntegrityError: a version is not after the aggregate's last one,
                versions of one aggregate do not increase within the insert,
                or the tracking record's id is not after the last one.
            DataError: more than 1,000 messages, or one larger than the server takes.
            NotSupportedError, OperationalError: see `_errors`.
        """
        records: list[tuple[str, bytes]] = []
        parts: dict[str, Part] = {}
        for event in events:
            subject = layout.subject(event.originator_id)
            part = parts.setdefault(subject, Part([], tracking=False))
            if part.numbers and event.originator_version <= part.numbers[-1]:
                raise IntegrityError(
                    f"{subject}: version {event.originator_version} follows version "
                    f"{part.numbers[-1]} in the same insert (versions must increase)"
                )
            part.numbers.append(event.originator_version)
            records.append((subject, encode_event(layout.id_text(event.originator_id), event)))
        if tracking is not None:
            subject = layout.tracking(tracking.application_name)
            parts[subject] = Part([tracking.notification_id], tracking=True)
            records.append(
                (subject, encode_tracking(tracking.application_name, tracking.notification_id))
            )
        if not records:
            return []
        if len(records) > MAX_MESSAGES:
            raise DataError(
                f"insert of {len(records)} records: an atomic insert holds at most "
                f"{MAX_MESSAGES} (events, and a tracking record)"
            )
        limit = self._wire.max_payload - _HEADROOM
        for subject, payload in records:
            if len(payload) > limit:
                raise DataError(
                    f"{subject}: a stored event of {len(payload)} bytes exceeds the "
                    f"server's max_payload ({self._wire.max_payload} bytes)"
                )
        first = await self._write(records, parts)
        if events:
            last = first + len(events) - 1
            self._written[layout.filter] = max(self._written.get(layout.filter, 0), last)
        return list(range(first, first + len(events)))

    async def _write(self, records: list[tuple[str, bytes]], parts: dict[str, Part]) -> int:
        fresh = False
        for _ in range(ROUNDS):
            positions = await self._positions_of(parts, fresh=fresh)
            _check(parts, positions)
            msg_id = "es-" + secrets.token_hex(12)
            messages: list[BatchMessage] = []
            # Only a subject's first message may carry the expected sequence (10164 otherwise).
            unseen = set(parts)
            for subject, payload in records:
                headers: dict[str, str] = {}
                if not messages:
                    headers[m.H_MSG_ID] = msg_id
                if subject in unseen:
                    unseen.discard(subject)
                    headers[m.H_EXPECTED_LAST_SUBJECT_SEQ] = str(positions[subject].stream_seq)
                messages.append((subject, payload, headers))
            first = await self._publish(messages, positions[records[0][0]].stream_seq, msg_id)
            if first is not None:
                self._remember(records, parts, first)
                return first
            fresh = True  # a conflict: the stream leader says where each subject is
        raise StoreError(f"insert: {ROUNDS} conflicts in a row without a decision")

    async def _positions_of(self, parts: dict[str, Part], *, fresh: bool) -> dict[str, Position]:
        """Where each subject stands: from the leader when `fresh`, else cached,
        assumed empty for an aggregate's first version, or read by Direct Get."""
        out: dict[str, Position] = {}
        wanted: list[tuple[str, Part]] = []
        for subject, part in parts.items():
            cached = None if fresh else self._positions.get(subject)
            if cached is None and not fresh and not part.tracking and part.numbers[0] <= 1:
                cached = NEW  # the server checks the subject is empty
            if cached is None:
                wanted.append((subject, part))
            else:
                out[subject] = cached
        found = await asyncio.gather(
            *(self.position(s, tracking=p.tracking, leader=fresh) for s, p in wanted)
        )
        out.update(zip((s for s, _ in wanted), found, strict=True))
        return out

    async def position(self, subject: str, *, tracking: bool, leader: bool) -> Position:
        """A subject's position read now (and cached): its next version (or
        notification id) and its last message's stream sequence."""
        if leader:
            got = await self._wire.reads.leader_last(self._stream, subject)
        else:
            last = await self._wire.reads.direct_last(self._stream, subject)
            got = None if last is None else (last[0], last[1])
        if got is None:
            return NEW
        data, seq = got
        where = f"{subject} #{seq}"
        number = (
            decode_tracking(data, where)
            if tracking
            else decode_event(data, where).originator_version
        )
        position = Position(number + 1, seq)
        self._positions.put(subject, position)
        return position

    def _remember(
        self, records: list[tuple[str, bytes]], parts: dict[str, Part], first: int
    ) -> None:
        last_seq = {subject: first + i for i, (subject, _) in enumerate(records)}
        for subject, seq in last_seq.items():
            self._positions.put(subject, Position(parts[subject].numbers[-1] + 1, seq))

    async def _publish(
        self, messages: list[BatchMessage], expected: int, msg_id: str
    ) -> int | None:
        """Send `messages` (resending on lost acknowledgements); the stream
        sequence of the first one stored, or None after a conflict."""
        subject = messages[0][0]
        what = f"insert into {subject}" + (f" (+{len(messages) - 1})" if len(messages) > 1 else "")
        timeout = self._wire.timeout
        retried = False
        attempts = waits = 0
        while True:
            attempts += 1
            try:
                ack = await self._send(messages, timeout)
            except StoreTimeout:
                retried = True
                if attempts < ATTEMPTS:
                    continue
                landed = await self._landed(subject, expected, msg_id, what)
                if landed is not None:
                    return landed
                raise
            except StoreUnavailable as exc:
                if not retried:
                    raise
                raise StoreTimeout(f"{what}: outcome unknown: sent, then {exc}") from exc
            err = ack.error
            if err is None:
                return ack.seq - len(messages) + 1
            code = err.err_code
            if code in (DUPLICATE_IN_PROCESS, TOO_MANY_BATCHES, BATCH_INCOMPLETE):
                # Busy, or an earlier attempt still being proposed: wait, send again.
                retried = retried or code == DUPLICATE_IN_PROCESS
                waits += 1
                if waits <= BACKOFFS:
                    attempts -= 1
                    await asyncio.sleep(min(timeout, 0.002 * 2**waits))
                    continue
            if code == BATCH_DUPLICATE_MSG_ID or (retried and code in CONFLICT_CODES):
                landed = await self._landed(subject, expected, msg_id, what)
                if landed is not None:
                    return landed
            if code in CONFLICT_CODES:
                return None
            raise err.as_error(what)

    async def _send(self, messages: list[BatchMessage], timeout: float) -> m.PubAck:
        if len(messages) == 1:
            subject, payload, headers = messages[0]
            return await self._wire.publish_commit(self._stream, subject, payload, headers, timeout)
        version = self._wire.server_version
        if version < ATOMIC_SERVER:
            # An older server ignores the batch headers and stores each message
            # on its own: never send it a batch.
            raise NotSupportedError(
                f"an insert of {len(messages)} records needs atomic batch publish, "
                f"nats-server {'.'.join(map(str, ATOMIC_SERVER))} or newer "
                f"(connected to {'.'.join(map(str, version))})"
            )
        async with self._batches:
            return await self._wire.publish_batch(messages, timeout)

    async def _landed(self, subject: str, expected: int, msg_id: str, what: str) -> int | None:
        """The stream sequence of our first message if an earlier attempt was
        stored: the first message on `subject` after `expected` carries `msg_id`."""
        try:
            winner = await self._wire.reads.leader_message(self._stream, subject, seq=expected + 1)
        except (StoreTimeout, StoreUnavailable) as exc:
            raise StoreTimeout(
                f"{what}: outcome unknown: no acknowledgement, and looking for it failed ({exc})"
            ) from exc
        if winner is not None and winner.msg_id == msg_id:
            return winner.seq
        return None


def _check(parts: dict[str, Part], positions: dict[str, Position]) -> None:
    """Raise IntegrityError where a record would not come after the subject's last one."""
    for subject, part in parts.items():
        after = positions[subject].next_sequence - 1
        if part.numbers[0] <= after:
            what = "notification id" if part.tracking else "version"
            raise IntegrityError(
                f"{subject}: {what} {part.numbers[0]} is not after the last recorded ({after})"
            )
