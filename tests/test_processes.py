"""The one child-process launcher (``quant_dev.processes.Child``): readiness by a printed line
or by a check, output kept and logged, and a bounded stop of the whole process group."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from quant_dev.processes import Child

PY = sys.executable


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_ready_line_environment_and_log(tmp_path) -> None:
    code = "import os, sys; print('noise'); print('listening on', os.environ['WHERE'], flush=True)"
    child = Child(
        "echo", [PY, "-c", code + "; __import__('time').sleep(600)"], r"listening on (\S+)",
        {"WHERE": "here:1"}, log=tmp_path / "echo.log",
    )  # fmt: skip
    assert child.match[1] == "here:1"
    assert child.stop(10) != 0  # SIGTERM ended it
    assert (tmp_path / "echo.log").read_text() == "noise\nlistening on here:1\n"


def test_ready_check_and_an_early_exit_named(tmp_path) -> None:
    flag = tmp_path / "flag"
    code = f"import pathlib, time; time.sleep(0.3); pathlib.Path({str(flag)!r}).touch(); "
    code += "time.sleep(600)"
    child = Child("toucher", [PY, "-c", code], flag.exists)
    assert flag.exists() and child.running()
    child.stop(10)
    with pytest.raises(RuntimeError, match=r"quitter exited 3 while waiting for ready:\n.*bye"):
        Child("quitter", [PY, "-c", "print('bye'); raise SystemExit(3)"], flag.is_dir)
    with pytest.raises(RuntimeError, match="silent did not start"):
        Child("silent", [PY, "-c", "pass"], "never printed")


def test_stop_ends_the_whole_group_within_the_bound(tmp_path) -> None:
    # A parent that ignores SIGTERM and a grandchild that outlives it.
    code = (
        "import signal, subprocess, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "p = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)']); "
        "print('grandchild', p.pid, flush=True); p.wait()"
    )
    child = Child("stubborn", [PY, "-c", code], r"grandchild (\d+)", group=True)
    grandchild = int(child.match[1])
    child.stop(1.0)  # SIGTERM ignored: SIGKILL after 1 s, to the group
    deadline = time.monotonic() + 10
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)  # reaped by init once killed
    assert not alive(grandchild)
