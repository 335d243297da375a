"""Start ``quant sim alpaca`` as a child process and learn its URL (tests, benchmarks, demo)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LISTENING = re.compile(r"listening on (http://\S+)")
START_TIMEOUT_SECONDS = 60.0


class SimProcess:
    def __init__(self, process: subprocess.Popen, url: str) -> None:
        self.process = process
        self.url = url

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(*args: str, env: dict[str, str] | None = None) -> SimProcess:
    """Run ``quant sim alpaca --port 0 ARGS`` and wait for its ``listening on`` line."""
    command = [sys.executable, "-m", "quant_cli.main", "sim", "alpaca", "--port", "0", *args]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if _LISTENING.search(line):
                found.set()
        found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(START_TIMEOUT_SECONDS) or not any(_LISTENING.search(x) for x in lines):
        process.kill()
        process.wait()
        raise RuntimeError(f"quant sim alpaca did not start: {''.join(lines)[-2000:]}")
    url = next(m[1] for x in lines if (m := _LISTENING.search(x)))
    return SimProcess(process, url)


@contextmanager
def running(*args: str, env: dict[str, str] | None = None) -> Iterator[SimProcess]:
    sim = start(*args, env=env)
    try:
        yield sim
    finally:
        sim.stop()
