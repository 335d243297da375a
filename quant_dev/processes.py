"""Child processes the demo and `make dev` start and stop: the ClickHouse endpoint and the
exchange simulators. Each prints a readiness line; SIGTERM stops it cleanly."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from quant_resources.settings import local_endpoint_url


class Child:
    def __init__(
        self, name: str, command: list[str], ready: str | None, env: dict | None = None
    ) -> None:
        self.name = name
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.match: re.Match | None = None
        found = threading.Event()
        pattern = re.compile(ready or "$^")

        def read() -> None:
            for line in self.process.stdout:
                self.lines.append(line)
                if self.match is None and (m := pattern.search(line)):
                    self.match = m
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if ready is None:
            return
        if not found.wait(90) or self.match is None:
            self.stop()
            raise RuntimeError(f"{name} did not start:\n{''.join(self.lines)[-2000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


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
        None,  # readiness is its /ping answer
    )
    try:
        _wait_ping(port, child)
        url = local_endpoint_url(path)
        if url is None:
            raise RuntimeError(f"{child.name} answers /ping but wrote no endpoint file in {path}")
        yield url
    finally:
        child.stop()


def _wait_ping(port: int, child: Child) -> None:
    import urllib.request

    for _ in range(600):
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited:\n{''.join(child.lines)[-2000:]}")
        with contextlib.suppress(OSError):
            if (
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1).read()
                == b"Ok.\n"
            ):
                return
        time.sleep(0.1)
    raise RuntimeError(f"the warehouse endpoint on port {port} does not answer /ping")


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
