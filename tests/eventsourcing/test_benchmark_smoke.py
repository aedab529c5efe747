"""`python -m benchmarks.es_app --tiny` runs end to end, so the case cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_the_eventsourcing_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NATS_URL", None)
    # Its own nats-server and SQLite; never a real PostgreSQL.
    env["ANGZARR_BENCH_PG_DSN"] = "postgresql://nobody@127.0.0.1:1/none"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.es_app", "--tiny", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((tmp_path / "eventsourcing-tiny.json").read_text())
    rows = {(r["op"], r["contender"]) for r in data["results"]}
    for op in {r["op"] for r in data["results"]}:
        assert (op, "angzarr_es.eventsourcing") in rows
        assert (op, "eventsourcing-sqlite") in rows
    assert len({op for op, _ in rows}) == 6
    assert any("PostgreSQL left out" in note for note in data["notes"])
