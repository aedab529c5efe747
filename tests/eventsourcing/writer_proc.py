"""A writer in its own process, for the two-process test:
`python -m tests.eventsourcing.writer_proc NATS_URL STREAM SEED ROUNDS ID...`.

Connects, prints `READY`, waits for a line on stdin, then for ROUNDS rounds
picks one of the aggregate ids, reads its last version and the last tracked
id of the upstream application "feed", and inserts one to three events with
the next tracking record, atomically. Prints `E <notification id> <id>
<version>` for each event stored, `C` for each IntegrityError, then `DONE`.
"""

from __future__ import annotations

import random
import sys
import uuid

from eventsourcing.persistence import IntegrityError, StoredEvent, Tracking
from eventsourcing.utils import Environment

from angzarr_es.eventsourcing import Factory


def main(url: str, stream: str, seed: int, rounds: int, ids: list[str]) -> None:
    factory = Factory(Environment("app", {"NATS_URL": url, "ANGZARR_ES_STREAM": stream}))
    recorder = factory.process_recorder()
    out = sys.stdout
    out.write("READY\n")
    out.flush()
    sys.stdin.readline()
    rng = random.Random(seed)
    for _ in range(rounds):
        originator = uuid.UUID(rng.choice(ids))
        last = recorder.select_events(originator, desc=True, limit=1)
        version = last[0].originator_version if last else 0
        tracked = recorder.max_tracking_id("feed") or 0
        events = [
            StoredEvent(originator, version + i, "topic", b"state")
            for i in range(1, rng.randint(1, 3) + 1)
        ]
        try:
            notification_ids = recorder.insert_events(
                events, tracking=Tracking("feed", tracked + 1)
            )
        except IntegrityError:
            out.write("C\n")
            continue
        for nid, e in zip(notification_ids or [], events, strict=True):
            out.write(f"E {nid} {e.originator_id} {e.originator_version}\n")
    out.write("DONE\n")
    out.flush()
    factory.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
