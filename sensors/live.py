"""``live_ingest_supervisor``: keeps one live ingestion run going, unless a user stopped it.

It starts a run when none is queued or in progress and the latest run did not end canceled: a
crashed run (failure) or one lost with its worker (failed by run monitoring) is restarted; a run
stopped from the UI (Terminate ends it canceled) stays stopped until someone launches
``live_ingest_job`` again, after which supervision resumes. A run a terminal ``quant live``
executes whose process was killed (SIGKILL) is first marked failed (``quant_assets/live_runs``),
so it counts as lost. The instance's tag concurrency limit
(``quant/live-ingest``: 1 in dagster.yaml) guards the rest. Turned on by default when
``QUANT_LIVE_AUTOSTART=1``.
"""

from __future__ import annotations

import dagster as dg

from quant_assets.live_runs import fail_lost_terminal_runs
from quant_resources.settings import live_autostart
from sensors.interval import sensor_interval

ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dg.sensor(
    job_name="live_ingest_job",
    minimum_interval_seconds=sensor_interval(30),
    default_status=(
        dg.DefaultSensorStatus.RUNNING if live_autostart() else dg.DefaultSensorStatus.STOPPED
    ),
    description=(
        "Keeps one live_ingest_job run going: restarts a crashed or lost run, but not one a "
        "user terminated (it stays stopped until live_ingest_job is launched again)."
    ),
)
def live_ingest_supervisor(context: dg.SensorEvaluationContext):
    # Run monitoring cannot see a terminal quant live's process: a killed one is failed here,
    # so it counts as lost (restarted) instead of blocking supervision for ever.
    for line in fail_lost_terminal_runs(context.instance):
        context.log.warning(f"marked failed: {line}")
    active = context.instance.get_run_records(
        dg.RunsFilter(job_name="live_ingest_job", statuses=ACTIVE), limit=1
    )
    if active:
        return dg.SkipReason(
            f"live run {active[0].dagster_run.run_id} is {active[0].dagster_run.status.value}"
        )
    latest = context.instance.get_run_records(dg.RunsFilter(job_name="live_ingest_job"), limit=1)
    if latest and latest[0].dagster_run.status == dg.DagsterRunStatus.CANCELED:
        return dg.SkipReason(
            f"live run {latest[0].dagster_run.run_id} was stopped by a user; launch "
            "live_ingest_job to start it again"
        )
    return dg.RunRequest(tags={"quant/live-ingest": "1"})
