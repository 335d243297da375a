"""``quant live --no-dagster`` never imports Dagster (about a second of CPU at every start, and
a dependency a plain ingest process does not need): not for ``--help``, not for a short real
run against ``quant sim binance`` and the test services' ClickHouse endpoint. Proved from the
child's own ``python -X importtime`` report of every module it imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.live_helpers import drop, fresh_warehouse, live_env, start_sim, stop_all

pytestmark = pytest.mark.xdist_group("live")


def imported_modules(importtime_stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines (``import time: self | cumulative | name``)."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def dagster_modules(names: set[str]) -> list[str]:
    return sorted(n for n in names if n.split(".")[0] in ("dagster", "dagster_shared"))


def run_quant(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "quant_cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_rule_sees_dagster_when_it_is_imported() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import quant_resources.warehouse"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "dagster" in dagster_modules(imported_modules(done.stderr))


def test_help_does_not_import_dagster() -> None:
    done = run_quant("live", "--no-dagster", "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    names = imported_modules(done.stderr)
    assert "quant_cli.live" in names  # the report is read, not empty
    assert dagster_modules(names) == []


def test_a_short_run_does_not_import_dagster(tmp_path, clickhouse_url) -> None:
    warehouse = fresh_warehouse(clickhouse_url)
    try:
        sim = start_sim(tmp_path, "--symbols", "btcusdt", "--rate", "200", "--seed", "3")
        env = live_env(sim, warehouse, tmp_path / "home")
        done = run_quant(
            "live",
            "--no-dagster",
            "--symbols",
            "btcusdt",
            "--duration",
            "3",
            "--lateness-ms",
            "200",
            "--json",
            env=env,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        stored = warehouse.scalar("SELECT count() FROM trades")
        assert summary["frames"] > 0 and summary["trades"] > 0 and stored > 0, summary
        names = imported_modules(done.stderr)
        assert "quant_resources.live.pipeline" in names
        assert dagster_modules(names) == []
    finally:
        stop_all()
        drop(warehouse)
