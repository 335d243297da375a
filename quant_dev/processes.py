"""The one launcher of child processes (the demo, `make dev`, the benchmarks and the tests):
start a command with its environment, wait until it is ready (a line it prints, or a check that
passes, never a fixed sleep), keep its output (in memory and, when asked, in a log file), and
stop it (SIGTERM, then SIGKILL after a bound; with ``group`` its whole process group)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from quant_resources.settings import local_endpoint_url

START_TIMEOUT_SECONDS = 90.0
KEPT_LINES = 5000  # output lines kept in memory (all of it also goes to the log file)


class Child:
    """One child process. ``ready``: a regular expression a line of its output must match
    (``match`` holds the match), a callable that returns true once it is ready (polled while
    the child runs), or None (do not wait). ``environ`` is its whole environment (default:
    this process's) and ``env`` adds to it. Standard output, and standard error unless
    ``stderr_log`` names a file of its own, is read line by line into ``lines`` and appended to
    ``log`` (and, with ``echo``, to this process's standard output). ``group``: the child
    leads a process group of its own, stopped whole.
    ``preload``: modules the child imports first (``command`` must be ``python -m MODULE
    ...``); it then waits, and runs the command once ``release()`` is called, which also waits
    for ``ready`` (see ``quant_dev.preload``). ``stdin``: its standard input is a pipe
    (``send``, ``close_stdin``)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        ready: str | Callable[[], object] | None,
        env: Mapping[str, str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        log: Path | None = None,
        stderr_log: Path | None = None,
        cwd: Path | None = None,
        group: bool = False,
        start_timeout: float = START_TIMEOUT_SECONDS,
        preload: Sequence[str] | None = None,
        echo: bool = False,
        stdin: bool = False,
        umask: int = -1,  # serve2: the mask of the files it creates (-1: this process's)
    ) -> None:
        self.name = name
        self.echo = echo
        self.log = log
        self.stderr_log = stderr_log
        self.group = group
        self.lines: deque[str] = deque(maxlen=KEPT_LINES)
        self.match: re.Match | None = None
        for path in (log, stderr_log):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
        if preload is not None:
            if command[1:2] != ["-m"]:
                raise ValueError(f"{name}: preload needs a `python -m MODULE` command: {command}")
            command = [command[0], "-m", "quant_dev.preload", ",".join(preload), "--", *command[2:]]
        with contextlib.ExitStack() as files:
            err = files.enter_context(stderr_log.open("a")) if stderr_log else subprocess.STDOUT
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE if preload is not None or stdin else None,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                errors="replace",
                env={**(os.environ if environ is None else environ), **(env or {})},
                cwd=cwd,
                start_new_session=group,
                umask=umask,  # serve2
            )
        self._found = threading.Event()
        pattern = re.compile(ready) if isinstance(ready, str) else None
        self._reader = threading.Thread(target=self._read, args=(pattern,), daemon=True)
        self._reader.start()
        self._ready, self._start_timeout, self._keep_stdin = ready, start_timeout, stdin
        if preload is None:
            self._wait_ready()

    def release(self) -> None:
        """Run the command of a child started with ``preload`` and wait until it is ready."""
        self.send("\n")
        if not self._keep_stdin:
            self.close_stdin()
        self._wait_ready()

    def send(self, text: str) -> None:
        """Write ``text`` to its standard input (a pipe: ``stdin`` or ``preload``)."""
        with contextlib.suppress(BrokenPipeError):  # it died: waiting on it shows why
            self.process.stdin.write(text)
            self.process.stdin.flush()

    def close_stdin(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()

    def _wait_ready(self) -> None:
        ready, name, start_timeout = self._ready, self.name, self._start_timeout
        if ready is None:
            return
        try:
            if isinstance(ready, str):
                if not self._found.wait(start_timeout) or self.match is None:
                    raise RuntimeError(f"{name} did not start:\n{self.tail()}")
            else:
                self.wait_for("ready", ready, start_timeout)
        except BaseException:
            self.stop()
            raise

    def _read(self, pattern: re.Pattern | None) -> None:
        with open(self.log, "a") if self.log else contextlib.nullcontext() as out:
            for line in self.process.stdout:
                self.lines.append(line)
                if out is not None:
                    out.write(line)
                    out.flush()
                if self.echo:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                if pattern is not None and self.match is None and (m := pattern.search(line)):
                    self.match = m
                    self._found.set()
        self._found.set()

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_for(self, what: str, check: Callable[[], object], timeout: float, every=0.05):
        """Poll ``check`` while the child runs until it returns something true, and return
        that; fail naming ``what`` (and showing the child's output) when it exits or time runs
        out. OSError from ``check`` (a server still starting) counts as not yet."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                if found := check():
                    return found
            if not self.running():
                self._reader.join(5)  # its last words
                raise RuntimeError(
                    f"{self.name} exited {self.process.returncode} while waiting for {what}:"
                    f"\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {what} within {timeout:.0f} s\n{self.tail()}")
            time.sleep(every)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to exit (subprocess.TimeoutExpired after ``timeout``); all its
        output has reached ``lines`` and the log when this returns."""
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code

    def signal(self, sig: int) -> None:
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                if self.group:
                    os.killpg(self.process.pid, sig)
                else:
                    self.process.send_signal(sig)

    def kill(self) -> int:
        """SIGKILL (the whole group with ``group``) and reap."""
        self.signal(signal.SIGKILL)
        return self.wait()

    def stop(self, timeout: float = 60.0, *, settle: bool = False) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``; returns its exit
        status. With ``group``, what is left of the group (children that outlive their
        parent) is killed too; with ``settle`` only once it is still there when ``timeout``
        is over (the SIGTERM reached every member: they may be shutting down cleanly)."""
        deadline = time.monotonic() + timeout
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
        if self.group:
            while settle and time.monotonic() < deadline and group_alive(self.process.pid):
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        return self.wait()

    def tail(self, n: int = 40) -> str:
        """The last ``n`` lines of its output (and of its separate standard error)."""
        text = "".join(list(self.lines)[-n:])
        if self.stderr_log is not None:
            text += f"--- {self.stderr_log.name} ---\n" + tail(self.stderr_log, n)
        return text


def group_alive(pgid: int) -> bool:
    """A process of group ``pgid`` is still there."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quant(*args: str) -> list[str]:
    return [sys.executable, "-m", "quant_cli.main", *args]


@contextlib.contextmanager
def warehouse_endpoint(path: Path) -> Iterator[str]:
    """`quant warehouse serve` on a free loopback port; yields its CLICKHOUSE_URL. The password
    is QUANT_WAREHOUSE_PASSWORD when set, else the one the server keeps in ``path``; the URL
    comes from the endpoint file the server writes there."""
    port = free_port()
    child = Child(
        "quant warehouse serve",
        quant("warehouse", "serve", "--path", str(path), "--port", str(port), "--user", "quant"),
        lambda: answers_ping(port),
    )
    try:
        url = local_endpoint_url(path)
        if url is None:
            raise RuntimeError(f"{child.name} answers /ping but wrote no endpoint file in {path}")
        yield url
    finally:
        child.stop()


def answers_ping(port: int) -> bool:
    """The ClickHouse endpoint on ``port`` answers ``/ping`` (OSError while it cannot)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as answer:
        return answer.read() == b"Ok.\n"


@contextlib.contextmanager
def binance_simulator(*args: str) -> Iterator[tuple[Child, str, str]]:
    child = Child(
        "quant sim binance",
        quant("sim", "binance", "--port", "0", *args),
        r"listening on (ws://\S+) \(rest (http://\S+)\)",
    )
    try:
        yield child, child.match[1], child.match[2]
    finally:
        child.stop()


@contextlib.contextmanager
def archive_simulator(*args: str) -> Iterator[tuple[Child, str]]:
    """`quant sim binance-archive ARGS` on a free port; yields it and its base URL."""
    child = Child(
        "quant sim binance-archive",
        quant("sim", "binance-archive", "--port", "0", *args),
        r"listening on (http://\S+)",
    )
    try:
        yield child, child.match[1]
    finally:
        child.stop()
