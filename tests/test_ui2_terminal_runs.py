"""A run of ``live_ingest_job`` that a terminal ``quant live`` executes has no run worker for
Dagster's run monitoring or run launcher to watch or signal, so quant does both itself:

- killed with SIGKILL, the run would stay "started" for ever; the supervisor sensor and the
  next ``quant live`` start mark it failed with one readable line, and never touch a run whose
  process lives or that belongs to another host;
- Terminate (the UI's GraphQL ``terminateRuns`` mutation) succeeds and the process stops
  cleanly: every ended minute stored, the run canceled with one line, exit 0.

Real simulator, warehouse endpoint, ``quant live`` processes and SQLite instance."""

from __future__ import annotations

import signal
import socket
import time

import dagster as dg
import pytest
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster_graphql.client.client_queries import TERMINATE_RUNS_JOB_MUTATION
from dagster_graphql.test.utils import execute_dagster_graphql

from quant_assets.live_runs import PID_TAG
from quant_cli.dev import dagster_home
from sensors.live import live_ingest_supervisor
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

# a minute of exchange time must end while the terminated session runs
pytestmark = pytest.mark.timeout(480)
RUNNING = (dg.DagsterRunStatus.STARTED,)


def _wait(what: str, check, timeout: float, live=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if live is not None and live.proc.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{live.explain() if live else ''}")


def _run_of(instance: dg.DagsterInstance, live):
    """The run the ``quant live`` process executes (its pid tag), once it is STARTED."""

    def find():
        for run in instance.get_runs(dg.RunsFilter(job_name="live_ingest_job")):
            if run.tags.get(PID_TAG) == str(live.proc.pid) and run.status in RUNNING:
                return run
        return None

    return _wait("quant live starts its run of live_ingest_job", find, 120, live)


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


def _minutes(instance: dg.DagsterInstance, run_id: str) -> list:
    records = instance.fetch_materializations(dg.AssetKey("live_trades"), limit=10).records
    return [r for r in records if r.run_id == run_id]


def _terminate_in_ui(instance: dg.DagsterInstance, run_id: str) -> dict:
    """The mutation the UI's Terminate dialog sends, against the same instance."""
    with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as workspace:
        result = execute_dagster_graphql(
            workspace.create_request_context(), TERMINATE_RUNS_JOB_MUTATION, {"runIds": [run_id]}
        )
    assert not result.errors, result.errors
    return result.data["terminateRuns"]["terminateRunResults"][0]


def test_killed_terminal_runs_are_failed_and_terminate_stops_one_cleanly(tmp_path, clickhouse_url):
    warehouse = fresh_warehouse(clickhouse_url)
    sim = start_sim(tmp_path, "--symbols", "btcusdt,ethusdt", "--rate", "50", "--seed", "7")
    home = tmp_path / "home"
    instance_dir = dagster_home(home)  # what make demo / make dev leave in QUANT_HOME
    env = live_env(sim, warehouse, home)
    env.pop("DAGSTER_HOME", None)
    try:
        with dg.DagsterInstance.from_config(str(instance_dir)) as instance:
            alive = started_terminal_run(instance)  # this test's own process: alive
            elsewhere = started_terminal_run(
                instance, **{"quant/host": f"not-{socket.gethostname()}"}
            )
            elsewhere_gone = started_terminal_run(
                instance, **{"quant/host": f"not-{socket.gethostname()}", PID_TAG: "999999999"}
            )

            # 1. SIGKILL; the supervisor sensor fails the run and treats it as lost.
            first = start_live(tmp_path, "killed1", env, "ethusdt", duration=240)
            killed = _killed(instance, first)
            request = live_ingest_supervisor(dg.build_sensor_context(instance=instance))
            assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
            assert _failure_message(instance, killed.run_id) == (
                f"quant live process {first.proc.pid} ended without a clean stop (killed?)"
            )
            for run_id in (alive, elsewhere, elsewhere_gone):
                assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
            assert isinstance(request, dg.SkipReason), request  # a decoy is active
            for run_id in (alive, elsewhere, elsewhere_gone):
                instance.delete_run(run_id)
            request = live_ingest_supervisor(dg.build_sensor_context(instance=instance))
            assert isinstance(request, dg.RunRequest), request  # the killed run: lost, restarted

            # 2. SIGKILL; the next quant live start fails the run before starting its own.
            second = start_live(tmp_path, "killed2", env, "ethusdt", duration=240)
            killed = _killed(instance, second)
            live = start_live(tmp_path, "live", env, "btcusdt", duration=300)
            run = _run_of(instance, live)
            assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
            assert f"quant live process {second.proc.pid} ended without a clean stop" in (
                live.stderr.read_text()
            )

            # 3. Terminate in the UI once a minute of exchange time has ended.
            _wait(  # the first minute is partial (the session started in it): two
                "the run reports two ended minutes of exchange time",
                lambda: len(_minutes(instance, run.run_id)) >= 2,
                200,
                live,
            )
            answer = _terminate_in_ui(instance, run.run_id)
            assert answer["__typename"] == "TerminateRunSuccess", answer
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
            assert trades.count == summary["trades"]  # the killed runs took ethusdt
            assert check_bars(warehouse, sim, trades), "no full minute during the session"
            stop_ms = summary["stop_exchange_ms"]
            assert len(check_bars_equal_trades(warehouse, ["BTCUSDT"], stop_ms)) >= 2
            # a user's stop stays stopped
            request = live_ingest_supervisor(dg.build_sensor_context(instance=instance))
            assert isinstance(request, dg.SkipReason), request
            assert "stopped by a user" in request.skip_message, request
    finally:
        stop_all()
        sim.stop()
        drop(warehouse)
