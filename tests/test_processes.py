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


def test_settle_lets_the_group_finish_its_sigterm_before_the_sigkill(tmp_path) -> None:
    # The leader exits at once; its child needs a moment to shut down cleanly (writes a file).
    done = tmp_path / "done"
    grandchild = (
        "import pathlib, signal, sys, time\n"
        "def bye(*_):\n"
        "    time.sleep(0.5)\n"
        f"    pathlib.Path({str(done)!r}).touch()\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('up', flush=True)\n"
        "time.sleep(600)\n"
    )
    code = (
        "import subprocess, sys; "
        f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}], stdout=subprocess.PIPE, "
        "text=True); p.stdout.readline(); print('ready', flush=True); p.wait()"
    )
    child = Child("leader", [PY, "-c", code], r"^ready$", group=True)
    child.stop(30, settle=True)
    assert done.exists()  # without settle the SIGKILL to the group comes first


def test_a_preloaded_child_runs_its_command_only_when_released(tmp_path) -> None:
    (tmp_path / "marker.py").write_text("print('imported', flush=True)\n")
    (tmp_path / "probe.py").write_text(
        "import sys\nprint('ran', sys.argv[1:], 'marker' in sys.modules, __name__, flush=True)\n"
    )
    child = Child(
        "probe", [PY, "-m", "probe", "a", "b"], r"^ran (.*)$", {"PYTHONPATH": str(tmp_path)},
        preload=["marker"],
    )  # fmt: skip
    child.wait_for("its imports", lambda: "imported\n" in child.lines, 60)
    assert child.running() and child.match is None  # it waits for the line on standard input
    child.release()
    assert child.match[1] == "['a', 'b'] True __main__"
    assert child.wait(30) == 0


def test_standard_input_pipe(tmp_path) -> None:
    code = "import sys\nfor line in sys.stdin:\n    print('got', line.strip(), flush=True)\n"
    child = Child("echo", [PY, "-c", code], None, stdin=True)
    child.send("one\n")
    child.wait_for("the answer", lambda: "got one\n" in child.lines, 30)
    child.close_stdin()
    assert child.wait(30) == 0
