"""Start ``quant sim alpaca`` as a child process and learn its URL (tests, benchmarks, demo)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from quant_dev.processes import Child, quant


class SimProcess(Child):
    """``quant sim alpaca``; ``url`` is where it listens."""

    @property
    def url(self) -> str:
        return self.match[1]


def start(*args: str, env: dict[str, str] | None = None) -> SimProcess:
    """Run ``quant sim alpaca --port 0 ARGS`` and wait for its ``listening on`` line."""
    return SimProcess(
        "quant sim alpaca",
        quant("sim", "alpaca", "--port", "0", *args),
        r"listening on (http://\S+)",
        env,
    )


@contextmanager
def running(*args: str, env: dict[str, str] | None = None) -> Iterator[SimProcess]:
    sim = start(*args, env=env)
    try:
        yield sim
    finally:
        sim.stop(10)
