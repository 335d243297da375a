"""`make dev` (`quant dev`) in a terminal: it says where the UI, the warehouse and the data API
are and how to stop, prints no library warnings, and Ctrl-C (SIGINT to the terminal's process
group) stops the UI, daemon, code server, data API, Redis and warehouse endpoint and exits 0."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from quant_dev.processes import Child, free_port, quant

pytestmark = pytest.mark.xdist_group("dagster_dev")
ROOT = Path(__file__).resolve().parents[1]


def _descendants(pid: int) -> set[int]:
    """Every live process whose ancestry leads to ``pid`` (read from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        children = [p for p, pp in parents.items() if pp == parent]
        found.update(children)
        todo.extend(children)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def test_ctrl_c_stops_every_child_and_exits_zero(tmp_path) -> None:
    env = {**os.environ, "QUANT_HOME": str(tmp_path / "home")}
    for name in ("CLICKHOUSE_URL", "DAGSTER_HOME", "LAKE_URL", "REDIS_URL"):
        env.pop(name, None)
    port = free_port()
    # A terminal's foreground process group of its own; ready once it says how to stop.
    child = Child(
        "quant dev",
        quant("dev", "--port", str(port)),
        r"^stop ",
        environ=env,
        cwd=ROOT,
        group=True,
        start_timeout=240,
    )
    try:
        text = "".join(child.lines)
        assert f"Dagster UI  http://127.0.0.1:{port}" in text, text
        assert "warehouse   http://quant:***@127.0.0.1:" in text, text
        assert "Ctrl-C" in text
        # The data API and its Redis run too; the curl line reads the token from its file.
        assert "redis       redis://:***@127.0.0.1:" in text, text
        assert "data API    http://127.0.0.1:" in text, text
        assert f"Bearer $(cat {tmp_path / 'home' / 'api-token'})" in text, text
        children = _descendants(child.pid)
        assert len(children) >= 5, children  # endpoint, redis, API, dagster dev, webserver
        child.signal(signal.SIGINT)  # what Ctrl-C sends (to the whole group)
        code = child.wait(120)
    finally:
        if child.running():
            child.kill()
    output = "".join(child.lines)
    rest = output[len(text) :]
    assert code == 0, output
    assert "stopped" in rest
    deadline = time.monotonic() + 30
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(children), f"left running: {_alive(children)}"
    for noise in ("Warning", "Traceback", "DEBUG", "make: ***"):
        assert noise not in output, output
