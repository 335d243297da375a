"""Which terminal ``quant live`` runs are lost: the process named by the run's tags (host, pid
and the pid's start time) is gone, or the pid now belongs to a later process. Only those of this
host are marked failed, with one line; QuantRunLauncher marks a live one canceling (its process
stops itself). A real SQLite instance; the processes are this test's own and a finished child."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid

import dagster as dg

from quant_assets.live_runs import (
    HOST_TAG,
    PID_START_TAG,
    PID_TAG,
    fail_lost_terminal_runs,
    terminal_run_tags,
)
from quant_cli.dev import dagster_home


def started_terminal_run(instance: dg.DagsterInstance, **tags: str) -> str:
    """A STARTED run of live_ingest_job tagged as this process's terminal run (``tags`` override:
    another pid or host)."""
    run_id = uuid.uuid4().hex
    instance.add_run(
        dg.DagsterRun(
            job_name="live_ingest_job",
            run_id=run_id,
            status=dg.DagsterRunStatus.STARTED,
            tags={**terminal_run_tags(), **tags},
        )
    )
    return run_id


def test_only_runs_of_this_host_whose_process_is_gone_are_failed(tmp_path) -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                           capture_output=True, text=True)  # fmt: skip
    gone_pid = ended.stdout.strip()
    with dg.DagsterInstance.from_config(str(dagster_home(tmp_path))) as instance:
        alive = started_terminal_run(instance)
        gone = started_terminal_run(instance, **{PID_TAG: gone_pid, PID_START_TAG: "1"})
        # this pid, but started at another time
        reused = started_terminal_run(instance, **{PID_START_TAG: "1"})
        elsewhere = started_terminal_run(
            instance, **{HOST_TAG: f"not-{socket.gethostname()}", PID_TAG: gone_pid}
        )
        lines = fail_lost_terminal_runs(instance)
        status = {r: instance.get_run_by_id(r).status for r in (alive, gone, reused, elsewhere)}
        assert status == {
            alive: dg.DagsterRunStatus.STARTED,
            gone: dg.DagsterRunStatus.FAILURE,
            reused: dg.DagsterRunStatus.FAILURE,
            elsewhere: dg.DagsterRunStatus.STARTED,
        }
        assert sorted(lines) == sorted(
            [
                f"run {gone}: quant live process {gone_pid} ended without a clean stop (killed?)",
                f"run {reused}: quant live process {terminal_run_tags()[PID_TAG]} ended without "
                "a clean stop (killed?)",
            ]
        )
        assert fail_lost_terminal_runs(instance) == []  # failed once


def test_terminate_marks_a_live_terminal_run_canceling(tmp_path) -> None:
    with dg.DagsterInstance.from_config(str(dagster_home(tmp_path))) as instance:
        run_id = started_terminal_run(instance)
        assert type(instance.run_launcher).__name__ == "QuantRunLauncher"
        assert instance.run_launcher.terminate(run_id) is True
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.CANCELING
