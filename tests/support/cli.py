"""Running `python -m angzarr_es` as a subprocess from the tests."""

from __future__ import annotations

import argparse
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from angzarr_es.cli import Command
from angzarr_es.config import Config

ROOT = Path(__file__).resolve().parents[2]
# Nothing listens on port 1.
UNREACHABLE = "nats://127.0.0.1:1"


def cli_env(**extra: str) -> dict[str, str]:
    """The test process's environment without NATS_URL/BUS_BACKEND, this checkout first."""
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "BUS_BACKEND")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.pop("ANGZARR_ES_DEBUG", None)
    env["ANGZARR_ES_PLAIN"] = "1"  # stable text; one test covers rich
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command line to completion, capturing text output."""
    return subprocess.run(
        [sys.executable, "-m", "angzarr_es", *args],
        env=cli_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


def run_script(
    script: Path, *args: str, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run a console script (see `console_script`) to completion, capturing text output."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def one_error_line(stderr: str) -> str:
    """The one line of an error, checked to be one and no traceback."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("angzarr-es: error: ")
    return lines[0]


def unreachable_fails(*args: str) -> None:
    """`angzarr-es ARGS` with no server to reach: one line, exit status 1."""
    done = run_cli(*args, env=cli_env(NATS_URL=UNREACHABLE))
    assert done.returncode == 1
    assert f"cannot connect to NATS at {UNREACHABLE}" in one_error_line(done.stderr)


class _Recording(argparse.ArgumentParser):
    def __init__(self) -> None:
        self.added: list[argparse.Action] = []  # before __init__ adds --help
        super().__init__()

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.added.append(action)
        return action


def required_arguments(command: Command) -> list[str]:
    """A placeholder for each positional argument `command` requires."""
    parser = _Recording()
    command.load().add_arguments(parser)
    return ["x" for a in parser.added if not a.option_strings and a.required]


def write_config(path: Path, config: Config) -> Path:
    """A TOML file for `config`'s server, stream and subject prefix."""
    n = config.nats
    url = n.url if isinstance(n.url, str) else ",".join(n.url)
    path.write_text(
        "[bus]\n"
        'backend = "nats"\n\n'
        "[bus.nats]\n"
        f'url = "{url}"\n'
        f'stream_name = "{n.stream_name}"\n'
        f'subject_prefix = "{n.subject_prefix}"\n'
    )
    return path


def add_nats_settings(conf: Path, text: str) -> Path:
    """`conf` (a `write_config` file, which ends in its [bus.nats] table) with
    the settings in `text` added to that table."""
    conf.write_text(conf.read_text() + text.rstrip("\n") + "\n")
    return conf


class Lines:
    """Lines of a child's stdout (or of `stream`, e.g. its stderr), read by a
    thread, awaited with a deadline."""

    def __init__(self, proc: subprocess.Popen[str], stream: IO[str] | None = None) -> None:
        self.proc = proc
        self.stream = proc.stdout if stream is None else stream
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.stream is not None
        try:
            for line in self.stream:
                self._queue.put(line.rstrip("\n"))
        except (ValueError, OSError):
            pass  # `stop()` closed the pipe while a grandchild still held it open
        finally:
            self._queue.put(None)

    def until(self, predicate: Callable[[str], bool], timeout: float = 20.0) -> str:
        """The first new line matching `predicate`; fails on EOF or after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching line in {timeout}s; got {self.lines}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"output ended; got {self.lines}")
            self.lines.append(line)
            if predicate(line):
                return line

    def rest(self, timeout: float = 20.0) -> list[str]:
        """Wait for the process to exit; all lines read so far plus the remainder."""
        self.proc.wait(timeout)
        self._thread.join(timeout)
        while not self._queue.empty():
            line = self._queue.get_nowait()
            if line is not None:
                self.lines.append(line)
        return self.lines


def start_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Lines:
    """Start the command line in the background, stdout as `Lines`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "angzarr_es", *args],
        env=cli_env() if env is None else env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    return Lines(proc)


def stderr_lines(lines: Lines) -> Lines:
    """The same child's stderr as `Lines` (read from now on by a thread of its own)."""
    return Lines(lines.proc, lines.proc.stderr)


def stop(lines: Lines) -> None:
    """Make sure the child is gone (tests call this in `finally`)."""
    proc = lines.proc
    if proc.poll() is None:
        # SIGTERM first: a `server` child stops its nats-server on it, while
        # SIGKILL would orphan that nats-server (a failed assertion used to
        # leave servers running).
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def console_script(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """What `pip install .` gives: an `angzarr-es` script (sys.path[0] is its own
    directory, not the working directory) and angzarr_es importable without
    the checkout's root, so without `benchmarks`."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "angzarr_es").symlink_to(ROOT / "angzarr_es", target_is_directory=True)
    # An editable install (`pip install -e`, as CI does) puts the checkout's
    # root on sys.path through a .pth file; take it off again, as a wheel would.
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        f"sys.path[:] = [p for p in sys.path if os.path.realpath(p) != {str(ROOT.resolve())!r}]\n"
    )
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "angzarr-es"
    script.write_text("import sys\nfrom angzarr_es.cli import main\nsys.exit(main())\n")
    env = cli_env()
    env["PYTHONPATH"] = str(site)
    env.pop("ANGZARR_ES_BENCH_MODULE", None)
    return script, env
