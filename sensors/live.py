"""``live_ingest_supervisor``: keeps exactly one live ingestion run going.

It starts a run when none is queued or in progress (after a crash, a deploy, a cancel); the
instance's tag concurrency limit (``quant/live-ingest``: 1 in dagster.yaml) guards the rest.
Turned on by default when ``QUANT_LIVE_AUTOSTART=1``.
"""

from __future__ import annotations

import dagster as dg

from quant_resources.settings import live_autostart

ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dg.sensor(
    job_name="live_ingest_job",
    minimum_interval_seconds=30,
    default_status=(
        dg.DefaultSensorStatus.RUNNING if live_autostart() else dg.DefaultSensorStatus.STOPPED
    ),
    description="Restarts live_ingest_job whenever no run of it is active.",
)
def live_ingest_supervisor(context: dg.SensorEvaluationContext):
    active = context.instance.get_run_records(
        dg.RunsFilter(job_name="live_ingest_job", statuses=ACTIVE), limit=1
    )
    if active:
        return dg.SkipReason(
            f"live run {active[0].dagster_run.run_id} is {active[0].dagster_run.status.value}"
        )
    return dg.RunRequest(tags={"quant/live-ingest": "1"})
