"""``quant live`` in a terminal is a run of ``live_ingest_job`` in the Dagster instance that
``make demo`` / ``make dev`` keep in ``QUANT_HOME/dagster``, materialising ``live_trades`` and
``live_bars_1m`` for each ended minute of exchange time. No run worker watches it, so quant does:

- Ctrl-C (SIGINT) is the terminal user's stop: the run succeeds and the summary names it;
- killed with SIGKILL, the run would stay "started" for ever; the next ``quant live`` start and
  the supervisor sensor mark it failed with one readable line, and never touch a run whose
  process lives or that belongs to another host;
- Terminate, clicked on the run's page in a real browser (Debian's Chromium, Playwright, a
  ``dagster-webserver`` on the instance), stops the process cleanly: exit 0, every ended minute's
  bar stored, the run canceled with one line and no stack trace, and the supervisor leaves it.

The three run at once, each in its own ``QUANT_HOME`` (the sensor must see no other active run)
and checked in a thread of its own, so the minutes of exchange time they wait for pass once.
Real simulator, warehouse endpoint, ``quant live`` processes, SQLite instances and webserver."""

from __future__ import annotations

import signal
import socket
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pytest

from quant_assets.live_runs import PID_TAG
from quant_cli.dev import dagster_home
from quant_dev.processes import free_port
from sensors.live import live_ingest_supervisor
from tests.dagster_dev import dagster_webserver, terminate_in_browser
from tests.live_helpers import (
    check_bars,
    check_bars_equal_trades,
    check_trades,
    drop,
    fresh_warehouse,
    live_env,
    start_live,
    start_sim,
    stop_all,
)
from tests.test_ui2_live_runs import started_terminal_run
from tests.test_ui_backfill import chromium

# two minutes of exchange time must end while the terminated session runs
pytestmark = pytest.mark.timeout(480)
RUNNING = (dg.DagsterRunStatus.STARTED,)
LIVE_ASSETS = ("live_trades", "live_bars_1m")


def _run_of(instance: dg.DagsterInstance, live) -> dg.DagsterRun:
    """The run the ``quant live`` process executes (its pid tag), once it is STARTED."""

    def find():
        for run in instance.get_runs(dg.RunsFilter(job_name="live_ingest_job")):
            if run.tags.get(PID_TAG) == str(live.proc.pid) and run.status in RUNNING:
                return run
        return None

    return live.child.wait_for("its run of live_ingest_job", find, 120, every=0.5)


def _killed(instance: dg.DagsterInstance, live) -> dg.DagsterRun:
    run = _run_of(instance, live)
    live.signal(signal.SIGKILL)
    live.wait(30)
    # Nobody else watches the process: the run reads as running although it is gone.
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    return run


def _failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    assert len(records) == 1, records
    return records[0].event_log_entry.dagster_event.message


def _materializations(instance: dg.DagsterInstance, asset: str, run_id: str) -> list:
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
    return [r.asset_materialization for r in records if r.run_id == run_id]


def _minutes_ended(instance: dg.DagsterInstance, live, run_id: str, count: int) -> list:
    """Wait until the run has reported ``count`` ended minutes on live_trades."""
    return live.child.wait_for(
        f"{count} ended minute(s) of exchange time reported on live_trades",
        lambda: len(found := _materializations(instance, "live_trades", run_id)) >= count and found,
        200,
        every=1,
    )


def test_terminal_runs_stopped_killed_and_terminated_in_the_browser(tmp_path, clickhouse_url):
    warehouse = fresh_warehouse(clickhouse_url)
    sim = start_sim(tmp_path, "--symbols", "btcusdt,ethusdt,solusdt", "--rate", "60", "--seed", "7")
    folders, envs = {}, {}
    for name in ("ctrl_c", "killed", "terminated"):
        home = tmp_path / name
        folders[name] = dagster_home(home)  # what make demo / make dev leave in QUANT_HOME
        envs[name] = live_env(sim, warehouse, home)
        envs[name].pop("DAGSTER_HOME", None)
    port, log = free_port(), tmp_path / "webserver.log"
    try:
        # one symbol each: the stored trades of each session are told apart
        live = start_live(tmp_path, "live", envs["terminated"], "btcusdt", duration=300)
        with dg.DagsterInstance.from_config(str(folders["terminated"])) as instance:
            # It waits longest (two minutes of exchange time): it starts alone, on a machine
            # not yet busy with the others' starts, which go on during its minutes.
            run = _run_of(instance, live)
            stopped = start_live(tmp_path, "ctrl_c", envs["ctrl_c"], "solusdt", duration=240)
            first = start_live(tmp_path, "killed1", envs["killed"], "ethusdt", duration=240)
            with (
                dg.DagsterInstance.from_config(str(folders["killed"])) as killed_home,
                dg.DagsterInstance.from_config(str(folders["ctrl_c"])) as ctrl_c_home,
                dagster_webserver(folders["terminated"], port, log) as dev,  # starts meanwhile
                ThreadPoolExecutor(2) as pool,  # each waits for its own processes, at once
            ):
                killing = pool.submit(
                    _killed_runs_are_failed, killed_home, first, tmp_path, envs["killed"]
                )
                ctrl_c = pool.submit(_ctrl_c_succeeds, ctrl_c_home, stopped)
                try:
                    _terminate_in_the_browser(instance, live, run, dev, warehouse, sim)
                except BaseException:
                    stop_all()  # the other checks' processes exit: their waits end now
                    raise
                ctrl_c.result()
                killing.result()
    finally:
        stop_all()
        sim.stop()
        drop(warehouse)


def _killed_runs_are_failed(instance: dg.DagsterInstance, first, tmp_path, env) -> None:
    alive = started_terminal_run(instance)  # this test's own process: alive
    elsewhere = started_terminal_run(instance, **{"quant/host": f"not-{socket.gethostname()}"})
    elsewhere_gone = started_terminal_run(
        instance, **{"quant/host": f"not-{socket.gethostname()}", PID_TAG: "999999999"}
    )
    decoys = (alive, elsewhere, elsewhere_gone)

    # 1. SIGKILL; the next quant live start fails the run before starting its own.
    second = start_live(tmp_path, "killed2", env, "ethusdt", duration=240, preloaded=True)
    killed = _killed(instance, first)
    second.release()  # it imported its modules meanwhile
    run = _run_of(instance, second)
    assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
    assert _failure_message(instance, killed.run_id) == (
        f"quant live process {first.proc.pid} ended without a clean stop (killed?)"
    )
    assert f"quant live process {first.proc.pid} ended without a clean stop" in (
        second.stderr.read_text()
    )
    for run_id in decoys:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED

    # 2. SIGKILL; the supervisor sensor fails the run and treats it as lost.
    assert _killed(instance, second).run_id == run.run_id
    request = live_ingest_supervisor(dg.build_sensor_context(instance=instance))
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert _failure_message(instance, run.run_id) == (
        f"quant live process {second.proc.pid} ended without a clean stop (killed?)"
    )
    for run_id in decoys:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
    assert isinstance(request, dg.SkipReason), request  # a decoy is active
    for run_id in decoys:
        instance.delete_run(run_id)
    request = live_ingest_supervisor(dg.build_sensor_context(instance=instance))
    assert isinstance(request, dg.RunRequest), request  # the killed run: lost, restarted


def _ctrl_c_succeeds(instance: dg.DagsterInstance, live) -> None:
    """Ctrl-C (SIGINT) in the terminal, the user's clean stop, once a minute has ended."""
    run = _run_of(instance, live)
    assert run.tags["quant/started-by"] == "quant live", run.tags
    (minute, *_) = _minutes_ended(instance, live, run.run_id, 1)
    assert {"trades", "lag_p99_ms", "connections"} <= set(minute.metadata), minute
    live.signal(signal.SIGINT)
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


def _terminate_in_the_browser(
    instance: dg.DagsterInstance, live, run: dg.DagsterRun, dev, warehouse, sim
) -> None:
    """Terminate clicked on the run's page once two minutes of exchange time have ended (the
    first is partial: the session started in it)."""
    with chromium() as browser:
        dev.wait("the webserver answers", lambda: dev.query("{ version }"), 120)
        dev.query("mutation { setNuxSeen }")  # what the sign-up prompt's Skip does, once
        terminate_in_browser(
            dev,
            browser,
            run.run_id,
            "Stopped from Dagster (Terminate)",
            when=lambda: _minutes_ended(instance, live, run.run_id, 2),
        )
    summary = live.summary(90)  # exit 0 with the summary
    ended = instance.get_run_by_id(run.run_id)
    assert ended.status == dg.DagsterRunStatus.CANCELED, ended.status
    assert f"run {run.run_id} was stopped from Dagster" in live.stderr.read_text()
    assert summary["dagster_run"].endswith("canceled"), summary["dagster_run"]
    canceled = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.RUN_CANCELED
    ).records
    assert len(canceled) == 1, canceled
    message = canceled[0].event_log_entry.dagster_event.message
    assert message.startswith("Stopped from Dagster (Terminate); session "), message
    failures = instance.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE
    ).records
    assert not failures, failures
    # every minute that ended before the stop has its bar, equal to the exchange's
    trades = check_trades(warehouse, sim, "BTCUSDT")
    assert trades.count == summary["trades"]  # the other sessions took other symbols
    assert check_bars(warehouse, sim, trades), "no full minute during the session"
    stop_ms = summary["stop_exchange_ms"]
    assert len(check_bars_equal_trades(warehouse, ["BTCUSDT"], stop_ms)) >= 2
    # a user's stop stays stopped
    request = live_ingest_supervisor(dg.build_sensor_context(instance=instance))
    assert isinstance(request, dg.SkipReason), request
    assert "stopped by a user" in request.skip_message, request
