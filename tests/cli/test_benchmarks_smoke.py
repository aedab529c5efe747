"""`python -m benchmarks --tiny` runs end to end, so the benchmark suite cannot rot."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYOUT_OPS = (
    "append 1 event (cached), by layout",
    "load 100 events (1/commit), by layout",
    "hot load 100 events (1/commit), by layout",
)


def benchmarks(
    args: list[str], timeout: float = 80, **env: str
) -> subprocess.CompletedProcess[str]:
    """`python -m benchmarks ARGS` from the checkout; NATS_URL only if given."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    environ.pop("NATS_URL", None)
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(90)
def test_benchmarks_run_end_to_end(tmp_path: Path) -> None:
    # The run starts its own server, and never touches a real PostgreSQL.
    done = benchmarks(
        ["--tiny", "--out", str(tmp_path)],
        ANGZARR_BENCH_PG_DSN="postgresql://nobody@127.0.0.1:1/none",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((tmp_path / "results-default-tiny.json").read_text())
    ops = {(r["op"], r["contender"]) for r in data["results"]}
    for op in (
        "append 1 event (cached)",
        "append 10 events (cached)",
        "append 1 event (lookup, existing)",
        "append 1 event (new aggregate)",
        "conflict (stale expected)",
        "load 100 events (1/commit)",
        "64 concurrent writers",
    ):
        assert (op, "angzarr_es") in ops, op
        assert (op, "raw nats-py (floor)") in ops, op
    if importlib.util.find_spec("eventsourcing") is not None:
        assert ("append 1 event (cached)", "eventsourcing-sqlite") in ops
    assert ("load 100 events (1/commit)", "naive nats-py") in ops
    # The server's share: the same requests over a bare socket.
    assert ("append 1 event (cached)", "socket only (no client)") in ops
    assert ("load 100 events (1/commit)", "socket only (no client)") in ops
    assert all(r["n"] > 0 and 0 < r["p50"] <= r["p99"] for r in data["results"])
    assert {t["name"] for t in data["targets"]} >= {
        "append (cached) p50 <= 1.10x floor p50",
        "append 10 events p50 <= 1.3x append 1 p50 (interleaved)",
    }
    assert data["memory"]["iter 1000 events (direct)"]["events"] == 1000
    # The hot-aggregate cache: the hot load beside its one-request floor, and
    # its memory in child processes (the bound judged when it evicted).
    assert ("hot load 100 events (1/commit)", "angzarr_es (hot cache)") in ops
    assert ("hot load 100 events (1/commit)", "raw nats-py (floor)") in ops
    assert ("append 1 event (cached)", "angzarr_es (hot cache)") in ops
    if importlib.util.find_spec("eventsourcing") is not None:
        cached_repo = "eventsourcing-sqlite (cached repository)"
        assert ("hot load 100 events (1/commit)", cached_repo) in ops
    names = {t["name"] for t in data["targets"]}
    assert (
        "hot load 100 events (1/commit): p50 <= 1.3x the raw request floor (one round trip)"
        in names
    )
    bound = data["cache_memory"]["hot cache, aggregates of 1 commit, beyond the bound"]
    assert bound["evictions"] > 0
    assert bound["cache_bytes"] <= bound["max_bytes"]
    assert any(n.startswith("hot cache, aggregates of 1 commit, beyond the bound") for n in names)
    # Both stream layouts in the same rounds, each on streams of its own.
    for op in LAYOUT_OPS:
        assert (op, "angzarr_es") in ops, op
        assert (op, "angzarr_es (per-domain)") in ops, op
        assert f"{op}: per-domain p50 <= 1.1x single p50" in names
    assert any("BENCHD_PLAYER (per-domain)" in note for note in data["notes"])
    assert data["leaders"] is None  # counted on a cluster only
    for key in ("python", "nats-server", "nats-py", "msgspec", "protobuf", "cpu", "cores"):
        assert data["machine"][key]
    command = shlex.join(["python", "-m", "benchmarks", "--tiny", "--out", str(tmp_path)])
    assert data["machine"]["command"] == command
    table = (tmp_path / "results-default-tiny.md").read_text()
    assert "| angzarr_es |" in table
    assert f"Command: `{command}`" in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "latency-default-tiny.png").read_bytes().startswith(b"\x89PNG")
    # The README's summary block is rebuilt from the full runs' JSON.
    from benchmarks import report

    (tmp_path / "results-default.json").write_bytes(
        (tmp_path / "results-default-tiny.json").read_bytes()
    )
    (tmp_path / "README.md").write_text(
        f"intro\n{report.SUMMARY_START}\nold block\n{report.SUMMARY_END}\nrest\n"
    )
    assert report.update_readme(tmp_path) is not None
    readme = (tmp_path / "README.md").read_text()
    assert "old block" not in readme
    assert "| append 1 event (cached) |" in readme
    assert readme.startswith("intro\n")
    assert readme.endswith(f"{report.SUMMARY_END}\nrest\n")


def test_the_socket_baseline_counts_messages_up_to_the_end_of_batch() -> None:
    from benchmarks.wire import count_messages

    eob = b"NATS/1.0 204 EOB\r\nNats-Num-Pending: 0\r\n\r\n"
    hdr = b"NATS/1.0\r\nA: b\r\n\r\n"
    reply = (
        b"MSG _in 1 5\r\nab\r\nc\r\n"  # a payload holding CRLF
        + b"HMSG _in 1 %d %d\r\n%bxyz\r\n" % (len(hdr), len(hdr) + 3, hdr)
        + b"MSG _in 1 0\r\n\r\n"
        + b"HMSG _in 1 %d %d\r\n%b\r\n" % (len(eob), len(eob), eob)
    )
    assert count_messages(reply) == 3
    assert count_messages(b"PING\r\n" + reply) == 3
    with pytest.raises(ValueError, match="end-of-batch"):
        count_messages(reply[: reply.rindex(b"HMSG")])
    with pytest.raises(ValueError, match="unexpected operation"):
        count_messages(b"-ERR 'boom'\r\n")


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("postgresql://bench:s3cret@db:5432/x", "postgresql://bench:***@db:5432/x"),
        ("nats://s3cretToken@nats.example:4222", "nats://***@nats.example:4222"),
        ("nats://bench:s3c@ret@nats.example:4222", "nats://bench:***@nats.example:4222"),
        (
            "host=db user=bench password='s3cret phrase' port=5",
            "host=db user=bench password=*** port=5",
        ),
        ("postgresql://db/x?password=s3cret", "postgresql://db/x?password=***"),
        ("postgresql://bench:s3c,ret@db/x", "postgresql://bench:***@db/x"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        (
            "nats://a:4222,nats://bench:s3cret@b:4222",
            "nats://a:4222,nats://bench:***@b:4222",
        ),
    ],
)
def test_the_recorded_command_hides_credentials(given: str, shown: str) -> None:
    from benchmarks.run import command_line

    recorded = command_line(["--pg-dsn", given, "--sync-always"])
    assert recorded == shlex.join(
        ["python", "-m", "benchmarks", "--pg-dsn", shown, "--sync-always"]
    )
    assert "s3c" not in command_line([f"--url={given}"])


async def test_the_socket_baseline_times_out_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from angzarr_es.embedded import EmbeddedServer
    from benchmarks import wire

    monkeypatch.setattr(wire, "TIMEOUT", 0.2)
    with EmbeddedServer() as server:
        client = await wire.WireClient.connect(server.url, "none")
        try:
            # No stream captures the subject: the server answers with a status
            # that carries no PubAck, so the reply never completes.
            with pytest.raises(TimeoutError, match="no reply"):
                await client.append("nowhere.at.all", b"x", 0)
        finally:
            await client.close()


@pytest.mark.timeout(90)
async def test_benchmarks_measure_a_server_they_did_not_start_and_leave_it_clean(
    tmp_path: Path,
) -> None:
    import nats

    from angzarr_es.embedded import EmbeddedServer

    with EmbeddedServer() as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="theirs", subjects=["theirs.>"])
        args = ["--tiny", "--no-peers", "--no-chart", "--out", str(tmp_path)]
        done = await asyncio.to_thread(benchmarks, args, NATS_URL=server.url)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        # Only the run's own streams were created, and they are gone again.
        assert [s.config.name for s in await js.streams_info()] == ["theirs"]
        await nc.close()
    data = json.loads((tmp_path / "results-external-tiny.json").read_text())
    assert server.url in data["machine"]["nats_mode"]
    assert data["machine"]["nats-server"].startswith("v2.")
    ops = {(r["op"], r["contender"]) for r in data["results"]}
    assert ("load 100 events (1/commit)", "angzarr_es") in ops
    assert ("load 100 events (1/commit)", "socket only (no client)") in ops
    assert not (tmp_path / "README.md").exists()


@pytest.mark.timeout(120)
def test_benchmarks_on_a_loopback_cluster_and_uvloop(tmp_path: Path) -> None:
    args = ["--tiny", "--cluster", "--loop", "uvloop", "--no-peers", "--no-chart"]
    done = benchmarks([*args, "--out", str(tmp_path)], timeout=110)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    single = json.loads((tmp_path / "results-default-tiny-uvloop.json").read_text())
    cluster = json.loads((tmp_path / "results-cluster-tiny-uvloop.json").read_text())
    assert single["machine"]["loop"] == cluster["machine"]["loop"] == "uvloop"
    assert cluster["machine"]["nats_mode"].startswith("R3 cluster of three servers")
    ops = {(r["op"], r["contender"]) for r in cluster["results"]}
    for op, contender in (
        ("append 1 event (cached)", "angzarr_es"),
        ("load 100 events (1/commit)", "angzarr_es"),
        ("hot load 100 events (1/commit)", "angzarr_es (hot cache)"),
        ("hot load 100 events (1/commit)", "raw nats-py (floor)"),
    ):
        assert (op, contender) in ops
    for op in LAYOUT_OPS:
        assert {(op, "angzarr_es"), (op, "angzarr_es (per-domain)")} <= ops
    # The leaders of new R3 domain streams, counted on every server.
    leaders = cluster["leaders"]
    assert leaders["replicas"] == 3
    assert list(leaders["leaders"]) == [f"BENCHD_DOMAIN{i}" for i in (1, 2, 3)]
    assert set(leaders["leaders"].values()) <= {"n1", "n2", "n3"}
    assert sorted(leaders["per_server"]) == ["n1", "n2", "n3"]
    assert sum(leaders["per_server"].values()) == 3
    # The layouts were compared on one leader (or the note says they were not).
    note = next(n for n in cluster["notes"] if n.startswith("layouts:"))
    assert "both led by n" in note or "not moved" in note, note
    table = (tmp_path / "results-cluster-tiny-uvloop.md").read_text()
    assert "## Stream leaders: 3 new R3 per-domain streams" in table


def test_the_leader_spread_is_reported_in_the_table_and_the_summary(tmp_path: Path) -> None:
    from benchmarks import report
    from benchmarks.context import LeaderSpread

    spread = LeaderSpread(
        replicas=3,
        leaders={"A_X": "n2", "A_Y": "n2", "A_Z": "n3"},
        per_server={"n1": 0, "n2": 2, "n3": 1},
    )
    report.write(tmp_path, "cluster", {}, [], [], {}, leaders=spread, chart_png=False)
    table = (tmp_path / "results-cluster.md").read_text()
    assert "| n1 | 0 |  |" in table
    assert "| n2 | 2 | A_X, A_Y |" in table
    assert "| n3 | 1 | A_Z |" in table
    assert "Leaders of 3 new R3 per-domain streams, per server: n1 0, n2 2, n3 1." in (
        report.summary(tmp_path)
    )
    # Results written before the spread was reported still read.
    (tmp_path / "results-default.json").write_bytes(
        (tmp_path / "results-cluster.json").read_bytes().replace(b'"leaders"', b'"unused"')
    )
    assert "p50 per operation, default file store" in report.summary(tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "nats://127.0.0.1:1", "--sync-always"], "not with --url"),
        (["--url", "nats://127.0.0.1:1", "--cluster"], "not with --url"),
        (["--replicas", "3"], "needs a cluster"),
    ],
)
def test_benchmark_options_that_cannot_work_together_are_refused(
    args: list[str], message: str
) -> None:
    done = benchmarks(args, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr


async def test_the_socket_baseline_reads_an_ack_that_follows_a_server_ping() -> None:
    """A full run outlasts the server's ping interval: a PING may come just
    before an append's reply (a full run failed on it)."""
    from benchmarks import wire

    class Server:
        """The transport: answers an append with a PING, then the PubAck."""

        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.sent.append(data)
            if data.startswith(b"HPUB"):
                ack = b'{"stream":"s","seq":7}'
                reply = b"PING\r\nMSG %b 1 %d\r\n%b\r\n" % (client._inbox, len(ack), ack)
                asyncio.get_running_loop().call_soon(protocol.data_received, reply)

        def close(self) -> None:
            pass

    server = Server()
    protocol = wire._Protocol()
    protocol.transport = server  # type: ignore[assignment]
    client = wire.WireClient(server, protocol, "s")  # type: ignore[arg-type]
    assert await client.append("s.a", b"x", 0) == 7
    assert b"PONG\r\n" in server.sent
    await client.close()


async def test_two_socket_baselines_on_one_server_keep_to_their_own_replies() -> None:
    import nats

    from angzarr_es.embedded import EmbeddedServer
    from benchmarks import wire

    with EmbeddedServer() as server:
        nc = await nats.connect(server.url)
        await nc.jetstream().add_stream(name="w", subjects=["w.>"])
        await nc.close()
        # Without a scheme, as nats-py also takes it.
        a = await wire.WireClient.connect(server.url.removeprefix("nats://"), "w")
        b = await wire.WireClient.connect(server.url, "w")
        try:
            last = {"a": 0, "b": 0}
            for _ in range(20):
                got = await asyncio.gather(
                    a.append("w.a", b"x", last["a"]), b.append("w.b", b"y", last["b"])
                )
                assert got[0] != got[1]
                last = {"a": got[0], "b": got[1]}
        finally:
            await a.close()
            await b.close()


async def test_a_run_that_fails_part_way_leaves_no_stream_behind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import nats

    from angzarr_es.embedded import EmbeddedServer
    from benchmarks import context, run, sizes

    async def broken(_: object) -> None:
        raise RuntimeError("part way")

    monkeypatch.setattr(run, "bench_appends", broken)
    with EmbeddedServer() as server:
        args = run.parse_args(["--tiny", "--no-peers", "--url", server.url])
        with pytest.raises(RuntimeError, match="part way"):
            await run.run_all(
                args, sizes.PRESETS["tiny"], context.Server.elsewhere(server.url, 1), tmp_path
            )
        nc = await nats.connect(server.url)
        try:
            assert [s.config.name for s in await nc.jetstream().streams_info()] == []
        finally:
            await nc.close()


def test_measure_warms_each_round_and_frees_results_off_the_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks import harness

    log: list[str] = []
    clock = iter(range(0, 10**9, 1000))

    def perf_counter_ns() -> int:
        log.append("clock")
        return next(clock)

    class Result:
        def __del__(self) -> None:
            log.append("free")

    async def run(_: int) -> object:
        log.append("run")
        return Result()

    monkeypatch.setattr("time.perf_counter_ns", perf_counter_ns)
    [measured] = asyncio.run(
        harness.measure("op", [harness.Case("c", run)], samples=4, rounds=2, warmup=1)
    )
    assert measured.stats.n == 4  # the per-round warm calls are not samples
    timed = ["clock", "run", "clock", "free"]  # freed after the clock is read
    round_ = ["run", "free", *timed, *timed]  # one untimed call first
    assert log == ["run", "free", *round_, *round_]


@pytest.mark.parametrize(
    ("args", "published"),
    [
        ([], True),
        (["--sync-always"], True),
        (["--quick"], False),
        (["--tiny"], False),
        (["--url", "nats://elsewhere:4222"], False),
    ],
)
def test_only_full_runs_write_to_docs_unless_told(args: list[str], published: bool) -> None:
    from benchmarks import run

    out = run.parse_args(args).out
    if published:
        assert out == Path("docs/benchmarks")
    else:
        assert "docs" not in out.parts
        assert out == Path(tempfile.gettempdir()) / "angzarr-es-bench"
    assert run.parse_args([*args, "--out", "here"]).out == Path("here")


@pytest.mark.timeout(120)
async def test_benchmarks_connect_as_the_config_file_says(tmp_path: Path) -> None:
    """`angzarr-es bench --config` hands the file to the run: the library's
    contenders and the raw floor connect with its credentials (before, only
    its URL went, and a server asking for a password refused them all)."""
    from angzarr_es.embedded import EmbeddedServer

    extra = "authorization { user: bench, password: s3cret }"
    with EmbeddedServer(monitor_port=None, extra_config=extra) as server:
        path = tmp_path / "angzarr.toml"
        path.write_text(f'[bus.nats]\nurl = "{server.url}"\nuser = "bench"\npassword = "s3cret"\n')
        args = ["--tiny", "--no-peers", "--no-chart", "--out", str(tmp_path / "out")]
        done = await asyncio.to_thread(
            benchmarks, args, NATS_URL=server.url, ANGZARR_ES_BENCH_CONFIG=str(path)
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        without = await asyncio.to_thread(benchmarks, ["--tiny", "--no-peers"], NATS_URL=server.url)
        assert without.returncode != 0  # the same run without the file is refused
    data = json.loads((tmp_path / "out" / "results-external-tiny.json").read_text())
    ops = {(r["op"], r["contender"]) for r in data["results"]}
    assert ("load 100 events (1/commit)", "angzarr_es") in ops
    assert ("load 100 events (1/commit)", "raw nats-py (floor)") in ops
    # The socket-only floor speaks no credentials: it says so and is left out.
    assert ("load 100 events (1/commit)", "socket only (no client)") not in ops
