"""What `make demo`'s report prints for after the demo (the data API alone, then a `curl` line)
works exactly as printed once the demo has ended: run through bash, in the environment the demo
ran in. Called by tests/test_demo.py on the report of its demo run (no demo of its own)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from quant_dev.processes import Child

SERVE_INTRO = "or the data API alone (its warehouse and Redis too; Ctrl-C stops them):"
# Set for the suite (test services), never in the shell of a user who ran `make demo`.
NOT_IN_A_USER_SHELL = ("CLICKHOUSE_URL", "LAKE_URL", "DAGSTER_HOME", "REDIS_URL")


def printed_commands(report: str) -> tuple[str, str]:
    """The serve command and the curl line under "or the data API alone"."""
    lines = report.splitlines()
    at = lines.index(SERVE_INTRO)
    assert lines[at + 2] == "then, from another shell:", lines[at : at + 4]
    return lines[at + 1].strip(), lines[at + 3].strip()


def assert_printed_commands_work(report: str) -> None:
    serve, curl = printed_commands(report)
    env = {k: v for k, v in os.environ.items() if k not in NOT_IN_A_USER_SHELL}

    def ask() -> dict | None:
        done = subprocess.run(["bash", "-c", curl], env=env, capture_output=True, text=True)
        try:
            return json.loads(done.stdout) if done.returncode == 0 else None
        except json.JSONDecodeError:
            return None

    assert ask() is None, "something already answers the printed curl line"
    child = Child("the printed serve command", ["bash", "-c", serve], None, environ=env, group=True)
    try:
        body = child.wait_for("the printed curl line to answer", ask, timeout=180, every=0.5)
        assert body["symbol"] == "BTCUSDT" and body["source"] == "binance", body
        # The demo's latest values, kept by its Redis across the restart (appendonly).
        assert body["trade"]["from"] == "redis", body
        # A stop of the command alone (SIGTERM) stops what it started: nothing of the group
        # is left (the warehouse endpoint and Redis are its children). bash ran the one
        # command in its own place (exec), so the signal reaches `quant serve api` itself.
        assert b"serve" in Path(f"/proc/{child.process.pid}/cmdline").read_bytes()
        child.process.send_signal(signal.SIGTERM)
        assert child.wait(60) == 0, child.tail()
        deadline = time.monotonic() + 60
        while not _group_gone(child.process.pid):
            assert time.monotonic() < deadline, "its warehouse endpoint or Redis outlived it"
            time.sleep(0.1)
    finally:
        child.stop()
    assert ask() is None


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False
