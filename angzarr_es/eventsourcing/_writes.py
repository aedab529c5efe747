"""The write path: stored events and tracking records, one message each.

An insert is one publish when it is one message, else one atomic batch (all
messages stored with consecutive stream sequences, or none): a batch costs
about 4 ms on file storage against 0.2 ms for a publish, so it is used only
when more than one message must be atomic.

Concurrency is checked by the server: the first message of each subject (an
aggregate sequence, or an upstream application's tracking records) carries
`Nats-Expected-Last-Subject-Sequence`, the stream sequence of the subject's
last record as this process knows it (from a cache fed by reads and writes,
one Direct Get on a miss, or nothing for an aggregate's first version). The
first message also carries a `Nats-Msg-Id` (random per insert).

A refusal (10071, 10164) proves that the insert cannot land only when it is
a 10071 naming a last sequence past every slot the insert expected
(`store._refusals.refutes`): in a cluster, a stream leader that was paused
while the others elected a new one still answers for a moment, and refuses
at once (10071 naming its stale copy's last sequence, or 10164) a publish
the new leader stores all the same. Any other refusal is decided by the
stream leader's reads of the slots (`_holder`): our id in the first
subject's slot is success; a rival's record in a slot, a conflict; no record
(or a read behind what this process saw: the deposed leader's) is a doubt,
re-checked by sending the insert again with the same id for up to
NATS_DEPOSED_LEADER_WAIT (`store._refusals.Doubts`), then an unknown outcome
(`StoreTimeout`, the library's `OperationalError`). After a conflict the
subjects are re-read from the leader: an insert whose version (or
notification id) is not after the last one raises the library's
`IntegrityError`; otherwise the insert is sent again at the new positions.

Lost acknowledgements: the same messages are sent again, with the same id.
A resent batch that was stored is refused whole (10201); a resent single
message is refused as a conflict on a single server (the expected sequence
is checked before the duplicate); either way the slots decide, as above.
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
from angzarr_es.eventsourcing._layout import Layout, stream_subjects
from angzarr_es.eventsourcing._records import (
    decode_event,
    decode_tracking,
    encode_event,
    encode_tracking,
)
from angzarr_es.eventsourcing._shared import Shared
from angzarr_es.store import _refusals
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
RIVAL = 0
"""`Writer._holder`: another's record holds a slot (no stream sequence is 0)."""


class Part(NamedTuple):
    """What an insert writes on one subject."""

    numbers: list[int]
    """Versions of the events, or the tracking record's notification id, in order."""
    tracking: bool


class Slot(NamedTuple):
    """Where an insert expects a subject's first message to go."""

    subject: str
    expected: int
    """The subject's last stream sequence the message carries as expected."""
    offset: int
    """Its place in the insert (its stream sequence, the first one's + offset)."""


class Writer:
    """Inserts of one factory (one connection, one stream)."""

    def __init__(self, shared: Shared) -> None:
        self._wire, self._stream, self._positions, self._written = shared
        # Every subject of the stream (`_holder` reads one stream sequence).
        self._everything = stream_subjects(self._stream)[0]
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
            slots: list[Slot] = []
            # Only a subject's first message may carry the expected sequence (10164 otherwise).
            unseen = set(parts)
            for offset, (subject, payload) in enumerate(records):
                headers: dict[str, str] = {}
                if not messages:
                    headers[m.H_MSG_ID] = msg_id
                if subject in unseen:
                    unseen.discard(subject)
                    expected = positions[subject].stream_seq
                    headers[m.H_EXPECTED_LAST_SUBJECT_SEQ] = str(expected)
                    slots.append(Slot(subject, expected, offset))
                messages.append((subject, payload, headers))
            first = await self._publish(messages, slots, msg_id)
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
        self, messages: list[BatchMessage], slots: list[Slot], msg_id: str
    ) -> int | None:
        """Send `messages` (resending on lost acknowledgements and doubted
        refusals); the stream sequence of the first one stored, or None after
        a conflict."""
        subject = messages[0][0]
        what = f"insert into {subject}" + (f" (+{len(messages) - 1})" if len(messages) > 1 else "")
        timeout = self._wire.timeout
        # Whether an attempt may have been stored (unanswered, in process, or
        # refused by a server that lags): then a refusal may be our own record.
        retried = False
        attempts = waits = 0
        doubts = _refusals.Doubts(self._wire.cfg.deposed_leader_wait)
        while True:
            attempts += 1
            try:
                ack = await self._send(messages, timeout)
            except StoreTimeout:
                retried = True
                if attempts < ATTEMPTS:
                    continue
                landed = await self._holder(slots, msg_id, what)
                if landed:
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
            if code == BATCH_DUPLICATE_MSG_ID:
                landed = await self._holder(slots, msg_id, what)
                if landed:
                    return landed
            if code not in CONFLICT_CODES:
                raise err.as_error(what)
            if not retried and _refusals.refutes(err, max(s.expected for s in slots)):
                return None  # a record past every slot: ours cannot land
            landed = await self._holder(slots, msg_id, what)
            if landed is not None:
                return landed or None
            # Neither ours nor a rival's in the slots: a server behind this
            # process's view (a deposed stream leader) refused; send again.
            retried = True
            if await doubts.pause():
                attempts -= 1  # a re-check, not an attempt
                continue
            wait = self._wire.cfg.deposed_leader_wait
            for slot in slots:  # looked up afresh next time (a stream made anew)
                self._positions.drop(slot.subject)
            raise StoreTimeout(
                f"{what}: outcome unknown: refused for {wait:g}s (NATS_DEPOSED_LEADER_WAIT), "
                "yet the stream leader's reads showed neither this insert nor a rival's "
                "record in its place (a server behind this process's view, such as a "
                "deposed stream leader, kept answering)"
            )

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

    async def _holder(self, slots: list[Slot], msg_id: str, what: str) -> int | None:
        """Who holds the slots the insert expected, read from the stream
        leader: the stream sequence of our first message if the insert is
        stored, RIVAL if another's record holds a slot (ours cannot land),
        None while in doubt (every slot free, or the answer from a server
        behind: a deposed leader's "nothing there" proves nothing).

        The first message after a slot's expected sequence is ours only if
        the message `offset` before it is our first one (an insert's messages
        have consecutive stream sequences).
        """
        reads = self._wire.reads
        first, *others = slots
        try:
            held = await reads.leader_message(self._stream, first.subject, seq=first.expected + 1)
            if held is not None:
                return held.seq if held.msg_id == msg_id else RIVAL
            for slot in others:
                held = await reads.leader_message(self._stream, slot.subject, seq=slot.expected + 1)
                if held is None:
                    continue
                start = held.seq - slot.offset
                lead = await reads.leader_message(self._stream, self._everything, seq=start)
                if lead is None:  # that server's copy ends before it: behind
                    return None
                ours = lead.seq == start and lead.msg_id == msg_id
                return start if ours else RIVAL
        except (StoreTimeout, StoreUnavailable) as exc:
            raise StoreTimeout(
                f"{what}: outcome unknown: an attempt may be stored, and looking for it "
                f"failed ({exc})"
            ) from exc
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
