"""How `make test` (pytest -n 2 --dist loadgroup) spreads the suite over its workers.

Three things, loaded by ``tests/conftest.py`` as a pytest plugin:

- **xdist_group works again.** pytest-xdist 3.8 groups a test by appending ``@group`` to
  ``item._nodeid``, but pytest 9.2 keeps the node id in ``item._id``, so the suffix was lost and
  ``--dist loadgroup`` silently became ``--dist load``: a group's tests ran on both workers at
  once and a module-scoped fixture (the live soak's three scenarios) ran once per worker. The
  hook below sets the suffix where pytest reads it, and does nothing where xdist already did.
- **A module is a work unit** unless its tests are in a group: xdist's loadgroup hands out an
  ungrouped test alone, so a module's module-scoped fixture (a started simulator, a seeded
  database) was set up on both workers.
- **Longest work first.** Each run records every test's duration in the pytest cache; the next
  run hands the work units (a group or a module) to the workers longest first,
  so no long unit starts last while the other worker idles. A test the cache has no record of
  (a fresh clone) takes its seconds from ``tests/durations_seed.json`` (the slowest tests of
  earlier runs), else the median recorded test.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from statistics import median

import pytest
from xdist.scheduler import LoadGroupScheduling

DURATIONS_KEY = "quant/test-durations"
SEED = Path(__file__).with_name("durations_seed.json")


def seed_durations() -> dict[str, float]:
    return json.loads(SEED.read_text())["seconds"]


def group_suffix(item: pytest.Item) -> str:
    """``@a_b`` for a test marked ``xdist_group("a")`` and ``("b")``, the form xdist schedules."""
    names = {
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers("xdist_group")
    }
    return f"@{'_'.join(sorted(names))}" if names else ""


def plain_id(nodeid: str) -> str:
    """The node id without xdist's ``@group`` suffix (an ``@`` inside ``[...]`` is a param)."""
    at = nodeid.rfind("@")
    return nodeid[:at] if at > nodeid.rfind("]") else nodeid


def longest_first(
    workqueue: OrderedDict[str, dict[str, bool]], durations: dict[str, float], default: float
) -> OrderedDict[str, dict[str, bool]]:
    """The work units ordered by the sum of their tests' seconds, longest first; a test not in
    ``durations`` costs ``default``. Ties keep xdist's order."""

    def cost(unit: dict[str, bool]) -> float:
        return sum(durations.get(plain_id(nodeid), default) for nodeid in unit)

    return OrderedDict(sorted(workqueue.items(), key=lambda scope_unit: -cost(scope_unit[1])))


class LongestFirstGroupScheduling(LoadGroupScheduling):
    """``--dist loadgroup`` with a module as the unit of ungrouped tests, longest unit first."""

    def __init__(self, config: pytest.Config, log=None) -> None:
        super().__init__(config, log)
        cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
        recorded = cache.get(DURATIONS_KEY, {}) if cache else {}
        self.durations: dict[str, float] = {**seed_durations(), **recorded}
        # Not the seed's median: the seed holds only the slowest tests.
        self.default = median(recorded.values()) if recorded else 1.0
        self.ordered = False

    def _split_scope(self, nodeid: str) -> str:
        group = super()._split_scope(nodeid)
        return group if group != nodeid else nodeid.split("::", 1)[0]

    def _assign_work_unit(self, node) -> None:
        # The work queue is complete on the first assignment (xdist builds it in schedule()).
        if not self.ordered:
            self.workqueue = longest_first(self.workqueue, self.durations, self.default)
            self.ordered = True
        super()._assign_work_unit(node)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not getattr(config.option, "loadgroup", False):  # set on xdist workers of loadgroup
        return
    for item in items:
        suffix = group_suffix(item)
        if suffix and not item.nodeid.endswith(suffix):
            item._id = type(item._id).parse(item.nodeid + suffix)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") == "loadgroup":
        return LongestFirstGroupScheduling(config, log)
    return None


class DurationRecorder:
    """Sums each test's setup, call and teardown seconds; stores them in the cache at the end,
    over the previous record (a run of a few files keeps the others' durations)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.seen: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        nodeid = plain_id(report.nodeid)
        self.seen[nodeid] = self.seen.get(nodeid, 0.0) + report.duration

    def pytest_sessionfinish(self) -> None:
        cache = getattr(self.config, "cache", None)
        if self.seen and cache is not None:
            recorded = cache.get(DURATIONS_KEY, {})
            recorded.update({nodeid: round(s, 3) for nodeid, s in self.seen.items()})
            cache.set(DURATIONS_KEY, recorded)


def pytest_configure(config: pytest.Config) -> None:
    # The controller sees every report; a worker (it has workerinput) leaves it to it.
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(DurationRecorder(config), "quant-test-durations")
