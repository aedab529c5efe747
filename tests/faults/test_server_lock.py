"""One server per data directory, and no nats-server outliving `angzarr-es server`.

Two servers on one JetStream store directory each acknowledge their own writes
(two different events 0 for one aggregate), and after a restart only one of
them survives: an acknowledged append lost. The data directory is therefore
locked while a server uses it. And a SIGKILLed `angzarr-es server` must not
leave its nats-server running (holding the directory) with nobody to stop it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import angzarr_es
from angzarr_es.embedded import LOCK_FILE, EmbeddedServer
from tests.support.cli import Lines, one_error_line, run_cli, start_cli, stop
from tests.support.configs import fresh_config
from tests.support.events import deposit

try:
    import fcntl  # noqa: F401
except ImportError:  # pragma: no cover
    HAVE_FLOCK = False
else:
    HAVE_FLOCK = True

needs_flock = pytest.mark.skipif(not HAVE_FLOCK, reason="no fcntl.flock on this platform")
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only"
)


async def append_and_count(url: str, stream: str, pid: uuid.UUID, cents: int) -> int:
    """Append one deposit to `pid` (provisioning `stream`); its history length after."""
    config = fresh_config(url, stream_name=stream, subject_prefix=stream.replace("-", ""))
    async with await angzarr_es.connect(config=config) as client:
        await client.provision()
        store = client.store("player")
        await store.append(pid, [deposit(cents)], expected=angzarr_es.ANY)
        return len((await store.load(pid)).events)


def gone(pid: int) -> bool:
    """Whether process `pid` has exited (a zombie nobody reaps counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout:g}s")
        time.sleep(0.02)


def server_lines(data: Path) -> Lines:
    return start_cli("server", "--data-dir", str(data), "--port", "-1", "--monitor-port", "-1")


def wait_running(server: Lines) -> tuple[int, str]:
    """The nats-server pid and client URL the CLI prints once it serves."""
    head = server.until(lambda line: "nats-server" in line and "running" in line)
    url = server.until(lambda line: "client URL" in line).split()[2]
    server.until(lambda line: line.startswith("Ctrl-C"))
    return int(head.rpartition("pid ")[2].rstrip(")")), url


# -- EmbeddedServer ------------------------------------------------------------------


@needs_flock
async def test_a_second_server_on_a_data_dir_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pid = uuid.uuid4()
    first = EmbeddedServer(store_dir=data, monitor_port=None)
    try:
        first.start()
        assert first.proc is not None
        conf_before = (data / "nats-server.conf").read_text()
        assert await append_and_count(first.url, "lock-a", pid, 100) == 1

        second = EmbeddedServer(store_dir=data, monitor_port=None)
        with pytest.raises(angzarr_es.StoreUnavailable) as info:
            second.start()
        message = str(info.value)
        assert message == (
            f"data directory {data} is in use by another server "
            f"(pid {os.getpid()}, nats-server pid {first.proc.pid})"
        )
        assert second.proc is None
        second.cleanup()  # must not release the first server's lock
        assert (data / "nats-server.conf").read_text() == conf_before

        # The first one is untouched and keeps serving.
        assert first.running
        assert await append_and_count(first.url, "lock-a", pid, 200) == 2
        with pytest.raises(angzarr_es.StoreUnavailable, match="is in use by another server"):
            EmbeddedServer(store_dir=data, monitor_port=None).start()
    finally:
        first.cleanup()

    # Stopped: the directory is free again, and the acknowledged appends are there.
    with EmbeddedServer(store_dir=data, monitor_port=None) as again:
        assert await append_and_count(again.url, "lock-a", pid, 300) == 3


@needs_flock
def test_a_crashed_and_restarted_server_keeps_its_lock(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = EmbeddedServer(store_dir=data, monitor_port=None)
    try:
        server.start()
        server.kill()  # a crash, then a restart on the same directory
        server.start()
        with pytest.raises(angzarr_es.StoreUnavailable, match="is in use by another server"):
            EmbeddedServer(store_dir=data, monitor_port=None).start()
    finally:
        server.cleanup()
    assert (data / LOCK_FILE).read_text() == ""  # released, no stale pid


@needs_flock
def test_a_forked_child_does_not_keep_the_lock(tmp_path: Path) -> None:
    """A fork (multiprocessing's default on Linux) copies descriptors: the
    child must not hold the directory after its parent's server stopped."""
    data = tmp_path / "data"
    server = EmbeddedServer(store_dir=data, monitor_port=None)
    read, write = os.pipe()
    child = 0
    try:
        server.start()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child waits until told to exit
            os.close(write)
            os.read(read, 1)
            os._exit(0)
        os.close(read)
        server.stop()
        server.start()  # refused while the child held a copy of the lock
        assert server.running
    finally:
        server.cleanup()
        if child:
            os.close(write)
            os.waitpid(child, 0)


def test_a_start_interrupted_while_waiting_leaves_no_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during start: `with` never reaches __exit__, so start itself
    must stop the process and release the directory."""
    data = tmp_path / "data"
    hung = tmp_path / "nats-server"  # a server that never says it is ready
    hung.write_text("#!/bin/sh\necho starting >&2\nexec tail -f /dev/null\n")
    hung.chmod(0o755)
    monkeypatch.setenv("NATS_SERVER_BIN", str(hung))
    server = EmbeddedServer(store_dir=data, monitor_port=None)
    main = threading.main_thread()
    assert threading.current_thread() is main  # where Ctrl-C lands

    def ctrl_c() -> None:
        # Once its log reader has the first line, start() waits for "ready".
        deadline = time.monotonic() + 10
        while not server.log and time.monotonic() < deadline:
            time.sleep(0.01)  # polling interval, not a wait for an event
        signal.pthread_kill(main.ident or 0, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    presser = threading.Thread(target=ctrl_c)
    try:
        presser.start()
        with pytest.raises(KeyboardInterrupt):
            server.start()
        assert server.proc is None
    finally:
        presser.join()
        signal.signal(signal.SIGINT, previous)
        server.stop()  # nothing left running when the test fails
    monkeypatch.undo()  # the real nats-server again
    with EmbeddedServer(store_dir=data, monitor_port=None) as again:  # not locked
        assert again.running


def test_temporary_servers_do_not_lock() -> None:
    with EmbeddedServer(monitor_port=None) as a, EmbeddedServer(monitor_port=None) as b:
        assert a.lock_path is None
        assert b.lock_path is None
        assert a.running
        assert b.running


async def test_a_server_started_on_an_exiting_thread_keeps_running(tmp_path: Path) -> None:
    # asyncio.to_thread(server.start) is how the fault tests restart a server:
    # by default the server must outlive the thread that started it.
    server = EmbeddedServer(store_dir=tmp_path / "data", monitor_port=None)
    try:
        thread = threading.Thread(target=server.start)
        thread.start()
        thread.join()
        assert await append_and_count(server.url, "lock-b", uuid.uuid4(), 1) == 1
        assert server.running
    finally:
        server.cleanup()


@linux_only
def test_die_with_parent_follows_the_starting_thread(tmp_path: Path) -> None:
    # Why only the CLI (main thread) opts in: the signal comes when the thread
    # that started the server exits.
    server = EmbeddedServer(store_dir=tmp_path / "data", monitor_port=None, die_with_parent=True)
    try:
        thread = threading.Thread(target=server.start)
        thread.start()
        thread.join()
        assert server.proc is not None
        assert server.proc.wait(20) == 0  # SIGTERM: a clean shutdown
    finally:
        server.cleanup()


# -- the CLI -------------------------------------------------------------------------


@needs_flock
def test_cli_server_refuses_a_data_dir_in_use(tmp_path: Path) -> None:
    data = (tmp_path / "data").resolve()
    first = server_lines(data)
    try:
        nats_pid, _ = wait_running(first)
        done = run_cli("server", "--data-dir", str(data), "--port", "-1", "--monitor-port", "-1")
        assert done.returncode == 1, done.stderr
        line = one_error_line(done.stderr)
        assert line == (
            f"angzarr-es: error: data directory {data} is in use by another server "
            f"(pid {first.proc.pid}, nats-server pid {nats_pid})"
        )
        assert first.proc.poll() is None
        assert not gone(nats_pid)

        first.proc.send_signal(signal.SIGTERM)
        assert first.rest()[-1] == f"nats-server stopped; its data is kept in {data}"
        assert first.proc.returncode == 0
    finally:
        stop(first)

    # Free again once the first one stopped.
    again = server_lines(data)
    try:
        wait_running(again)
    finally:
        stop(again)


@linux_only
def test_cli_server_child_dies_with_a_killed_parent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = server_lines(data)
    nats_pid = 0
    try:
        nats_pid, _ = wait_running(server)
        stat = Path(f"/proc/{nats_pid}/stat").read_text()
        assert int(stat.rpartition(")")[2].split()[1]) == server.proc.pid  # our child
        server.proc.kill()
        server.proc.wait(10)
        wait_for(lambda: gone(nats_pid), f"nats-server pid {nats_pid} gone")
    finally:
        stop(server)
        if nats_pid and not gone(nats_pid):
            os.kill(nats_pid, signal.SIGKILL)

    # Nothing holds the directory any more.
    again = server_lines(data)
    try:
        wait_running(again)
    finally:
        stop(again)
