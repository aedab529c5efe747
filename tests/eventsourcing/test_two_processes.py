"""Two processes inserting into the same aggregates and tracking the same
upstream application: the server's checks keep both consistent."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

from tests.eventsourcing.support import WithNats

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 60
WAIT = 60.0


class TestTwoProcesses(WithNats):
    def test_racing_processes_lose_nothing_and_duplicate_nothing(self) -> None:
        self.make_factory().process_recorder()  # the stream, made once before the race
        ids = [str(uuid.uuid4()) for _ in range(3)]
        stream = self.settings["ANGZARR_ES_STREAM"]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.eventsourcing.writer_proc",
                    self.nats_url,
                    stream,
                    str(seed),
                    str(ROUNDS),
                    *ids,
                ],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for seed in (1, 2)
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None
                assert proc.stdout.readline() == "READY\n"
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            outputs = [proc.communicate(timeout=WAIT)[0] for proc in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert [proc.returncode for proc in procs] == [0, 0]
        lines = [line.split() for out in outputs for line in out.splitlines()]
        events = [line for line in lines if line[0] == "E"]
        stored = {(line[2], int(line[3])): int(line[1]) for line in events}
        conflicts = sum(1 for line in lines if line[0] == "C")
        assert sum(1 for line in lines if line[0] == "DONE") == 2
        assert len(stored) == len(events)  # no (aggregate, version) reported twice

        recorder = self.make_factory().process_recorder()
        for originator in ids:
            versions = [e.originator_version for e in recorder.select_events(uuid.UUID(originator))]
            assert versions == list(range(1, len(versions) + 1))
        notifications = recorder.select_notifications(None, 10_000)
        read = {(str(n.originator_id), n.originator_version): n.id for n in notifications}
        assert read == stored
        # Every successful insert advanced the tracking record by exactly one.
        successful = 2 * ROUNDS - conflicts
        assert recorder.max_tracking_id("feed") == successful
        assert conflicts > 0, "the processes never raced (too few rounds?)"
        assert max(Counter(n.id for n in notifications).values()) == 1
