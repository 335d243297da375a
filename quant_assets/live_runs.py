"""Runs of ``live_ingest_job`` that a terminal ``quant live`` executes in its own process.

The Dagster daemon's run monitoring cannot watch such a run: no run worker was launched for it.
So the run carries tags naming its process (host, pid and the pid's start time, which tells a
reused pid apart), and :func:`fail_lost_terminal_runs` does what run monitoring would: a
STARTED or CANCELING run of this host whose process is gone is marked failed, with one line
("quant live process 1234 ended without a clean stop (killed?)"). Runs whose process lives, and
runs of other hosts, are never touched. The supervisor sensor and every new ``quant live``
start in Dagster mode call it.

Terminate in the UI asks the run launcher; :class:`QuantRunLauncher` answers for these runs by
marking them CANCELING (the process watches its run's status and stops cleanly), where the
default launcher would fail to find the run worker it never started.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import GRPC_INFO_TAG

STARTED_BY_TAG = "quant/started-by"
STARTED_BY_TERMINAL = "quant live"
HOST_TAG = "quant/host"
PID_TAG = "quant/pid"
PID_START_TAG = "quant/pid-start"
# A run whose process may be gone; QUEUED/STARTING never apply to a terminal run (it starts
# in the process at once).
WATCHED = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def process_start(pid: int) -> str:
    """When ``pid`` started, in clock ticks after boot (Linux ``/proc``); "" when unknown or
    gone. A pid reused by another process has another start."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: count after its last ")".
    return stat.rsplit(")", 1)[1].split()[19]


def terminal_run_tags() -> dict[str, str]:
    """Tags of a run executed by this process for a terminal ``quant live``."""
    pid = os.getpid()
    return {
        STARTED_BY_TAG: STARTED_BY_TERMINAL,
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        PID_START_TAG: process_start(pid),
    }


def process_alive(tags: dict[str, str]) -> bool:
    """Whether the process named by a terminal run's tags (on this host) still runs."""
    pid = int(tags[PID_TAG])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    started = tags.get(PID_START_TAG, "")
    # No recorded start (not Linux) leaves only the pid to go by.
    return not started or process_start(pid) in ("", started)


def is_terminal_run(run: dg.DagsterRun) -> bool:
    return run.tags.get(STARTED_BY_TAG) == STARTED_BY_TERMINAL and PID_TAG in run.tags


def lost(run: dg.DagsterRun) -> bool:
    """A terminal run of this host whose process is gone."""
    return (
        is_terminal_run(run)
        and run.tags.get(HOST_TAG) == socket.gethostname()
        and not process_alive(run.tags)
    )


def fail_lost_terminal_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every STARTED/CANCELING ``live_ingest_job`` run started by ``quant live`` on
    this host whose process is gone; returns one line per run marked."""
    records = instance.get_run_records(
        dg.RunsFilter(
            job_name="live_ingest_job",
            statuses=WATCHED,
            tags={STARTED_BY_TAG: STARTED_BY_TERMINAL},
        )
    )
    marked = []
    for record in records:
        run = record.dagster_run
        if not lost(run):
            continue
        message = f"quant live process {run.tags[PID_TAG]} ended without a clean stop (killed?)"
        instance.report_run_failed(run, message=message)
        marked.append(f"run {run.run_id}: {message}")
    return marked


class QuantRunLauncher(dg.DefaultRunLauncher):
    """Dagster's default launcher, which also terminates runs a terminal ``quant live``
    executes: it marks them CANCELING and the process, which watches its run, stops cleanly
    and ends the run canceled. (The default launcher would look for a run worker's gRPC
    address, find none and report "Unable to terminate run".)"""

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished or not is_terminal_run(run):
            return super().terminate(run_id)
        if GRPC_INFO_TAG in run.tags:
            return super().terminate(run_id)
        if lost(run):
            fail_lost_terminal_runs(self._instance)
            return True
        self._instance.report_run_canceling(
            run,
            message=(
                f"Asked quant live process {run.tags[PID_TAG]} on {run.tags.get(HOST_TAG)} "
                "to stop: it writes every ended minute, then ends the run canceled"
            ),
        )
        return True
