"""`make test`'s scheduling (tests/xdist_scheduling.py): a group, and an ungrouped module, runs
on one worker, so its module-scoped fixture runs once, and the longest recorded work starts
first. Proved on a small generated suite run by the real pytest-xdist with two workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

from tests.xdist_scheduling import DURATIONS_KEY, longest_first, plain_id, seed_durations

REPO = Path(__file__).resolve().parents[1]
PYTEST = (sys.executable, "-m", "pytest", "-q")

GROUPED = """
import os, pytest
pytestmark = pytest.mark.xdist_group("live")

@pytest.fixture(scope="module")
def scenario():
    with open(os.environ["LOG"], "a") as log:
        log.write(f"fixture {__name__}\\n")
    yield

def test_1(scenario): pass
def test_2(scenario): pass
def test_3(scenario): pass
def test_4(scenario): pass
"""
UNGROUPED = GROUPED.replace('pytestmark = pytest.mark.xdist_group("live")', "")

SINGLE = """
import os

def test_{n}():
    with open(os.environ["LOG"], "a") as log:
        log.write("start test_{n}\\n")
"""


def run_suite(tmp_path: Path, durations: dict[str, float]) -> list[str]:
    suite = tmp_path / "suite"
    (suite / "tests").mkdir(parents=True)
    (suite / "tests" / "test_grouped.py").write_text(GROUPED)
    (suite / "tests" / "test_ungrouped.py").write_text(UNGROUPED)
    for n in range(6):
        (suite / "tests" / f"test_single{n}.py").write_text(SINGLE.format(n=n))
    cache = suite / ".pytest_cache" / "v" / DURATIONS_KEY
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps(durations))
    log = tmp_path / "log"
    env = {**os.environ, "LOG": str(log), "PYTHONPATH": str(REPO)}
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run(
        [*PYTEST, "-p", "tests.xdist_scheduling", "-n", "2", "--dist", "loadgroup", "tests"],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    recorded = json.loads(cache.read_text())
    assert recorded["tests/test_grouped.py::test_1"] >= 0, recorded  # stored without "@live"
    return log.read_text().splitlines()


def test_a_group_or_a_module_runs_on_one_worker_and_the_longest_work_starts_first(tmp_path):
    recorded = {f"tests/test_single{n}.py::test_{n}": 0.1 for n in range(6)}
    recorded |= {"tests/test_single4.py::test_4": 50.0, "tests/test_single2.py::test_2": 40.0}
    lines = run_suite(tmp_path, recorded)
    fixtures = [line for line in lines if line.startswith("fixture")]
    # Under plain `--dist load` each module's four tests are spread and both workers set its
    # fixture up; so did xdist's loadgroup for the ungrouped module.
    assert sorted(fixtures) == ["fixture test_grouped", "fixture test_ungrouped"], lines
    starts = [line for line in lines if line.startswith("start")]
    assert set(starts[:2]) == {"start test_4", "start test_2"}, lines
    assert len(starts) == 6, lines


def test_units_are_ordered_by_recorded_seconds_and_unknown_tests_cost_the_default():
    queue = OrderedDict(
        [
            ("a.py::t1", {"a.py::t1": False}),
            ("live", {"b.py::t1@live": False, "b.py::t2@live": False}),
            ("c.py::t1", {"c.py::t1": False}),
        ]
    )
    durations = {"a.py::t1": 5.0, "b.py::t1": 1.0, "c.py::t1": 9.0}
    # b.py::t2 has no record: it costs the default, 5 s, so the group costs 6 s.
    assert list(longest_first(queue, durations, 5.0)) == ["c.py::t1", "live", "a.py::t1"]
    # Nothing recorded: a unit costs its number of tests; ties keep xdist's order.
    assert list(longest_first(queue, {}, 1.0)) == ["live", "a.py::t1", "c.py::t1"]


def test_the_seed_names_existing_tests():
    """A renamed test would silently lose its place at the front of a fresh clone's run."""
    for nodeid in seed_durations():
        path, name = nodeid.split("[")[0].split("::")
        assert f"def {name}(" in (REPO / path).read_text(), nodeid


def test_plain_id_drops_the_group_but_not_an_at_sign_in_a_parameter():
    assert plain_id("t.py::test_x@live") == "t.py::test_x"
    assert plain_id("t.py::test_x[a@b]@live") == "t.py::test_x[a@b]"
    assert plain_id("t.py::test_x[a@b]") == "t.py::test_x[a@b]"
