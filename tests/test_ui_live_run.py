"""``quant live`` in a terminal is a run the UI shows: with the Dagster instance that ``make
demo`` / ``make dev`` keep in ``QUANT_HOME/dagster``, the session runs as a run of
``live_ingest_job`` in that instance, materialising ``live_trades`` and ``live_bars_1m`` for each
ended minute of exchange time. Ctrl-C (SIGINT) is the terminal user's stop: the run succeeds, the
session closes cleanly and the summary names the run. Real simulator, warehouse endpoint and
``quant live`` process; the instance is read as the webserver reads it."""

from __future__ import annotations

import signal
import time

import dagster as dg
import pytest

from quant_cli.dev import dagster_home
from quant_cli.live import dagster_instance_home
from tests.live_helpers import drop, fresh_warehouse, live_env, start_live, start_sim, stop_all

# a minute of exchange time must end while the session runs
pytestmark = pytest.mark.timeout(300)
LIVE_ASSETS = ("live_trades", "live_bars_1m")


def _materializations(instance: dg.DagsterInstance, asset: str, run_id: str) -> list:
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
    return [r.asset_materialization for r in records if r.run_id == run_id]


def _wait(what: str, check, timeout: float, live):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if live.proc.poll() is not None:
            break
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{live.explain()}")


def test_terminal_quant_live_is_a_run_of_live_ingest_job(tmp_path, clickhouse_url):
    warehouse = fresh_warehouse(clickhouse_url)
    sim = start_sim(tmp_path, "--symbols", "btcusdt", "--rate", "50", "--seed", "5")
    home = tmp_path / "home"
    instance_dir = dagster_home(home)  # what make demo / make dev leave in QUANT_HOME
    env = live_env(sim, warehouse, home)
    env.pop("DAGSTER_HOME", None)
    try:
        live = start_live(tmp_path, "live", env, "btcusdt", duration=240)
        with dg.DagsterInstance.from_config(str(instance_dir)) as instance:
            run = _wait(
                "quant live starts a run of live_ingest_job in QUANT_HOME's instance",
                lambda: instance.get_runs(dg.RunsFilter(job_name="live_ingest_job")),
                120,
                live,
            )[0]
            assert run.tags["quant/started-by"] == "quant live", run.tags
            minute = _wait(
                "the run reports an ended minute of exchange time on live_trades",
                lambda: _materializations(instance, "live_trades", run.run_id),
                150,
                live,
            )[0]
            assert {"trades", "lag_p99_ms", "connections"} <= set(minute.metadata), minute
            live.signal(signal.SIGINT)  # Ctrl-C in the terminal: the user's clean stop
            summary = live.summary(90)
            ended = instance.get_run_by_id(run.run_id)
            assert ended.status == dg.DagsterRunStatus.SUCCESS, ended.status
            assert summary["dagster_run"].startswith(run.run_id), summary["dagster_run"]
            per_asset = {a: _materializations(instance, a, run.run_id) for a in LIVE_ASSETS}
            for asset, events in per_asset.items():
                # every ended minute, then the stop with the session's totals
                stops = [m for m in events if "stopped" in m.metadata]
                assert len(stops) == 1 and len(events) >= 2, (asset, events)
                assert stops[0].metadata["session_id"].value == summary["session_id"], asset
                assert stops[0].metadata["stopped"].value == "on request", asset
            stop = next(m for m in per_asset["live_trades"] if "stopped" in m.metadata)
            assert stop.metadata["trades_total"].value == summary["trades"] > 0
    finally:
        stop_all()
        sim.stop()
        drop(warehouse)


def test_the_instance_is_quant_homes_when_it_has_one(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QUANT_HOME", str(tmp_path))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert dagster_instance_home(None) is None  # no instance: no Dagster (a fast start)
    assert dagster_instance_home(True) == tmp_path / "dagster"  # --dagster makes it
    assert (tmp_path / "dagster" / "dagster.yaml").exists()
    assert dagster_instance_home(None) == tmp_path / "dagster"  # as after make demo / dev
    assert dagster_instance_home(False) is None  # --no-dagster
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "other"))
    assert dagster_instance_home(None) == tmp_path / "other"
