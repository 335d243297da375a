"""live_ingest_supervisor starts a run only when none of live_ingest_job is active, and not
after a user stopped the latest one."""

from __future__ import annotations

import dagster as dg

from sensors.live import live_ingest_supervisor


def _run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus) -> None:
    instance.add_run(
        dg.DagsterRun(job_name="live_ingest_job", status=status, tags={"quant/live-ingest": "1"})
    )


def test_starts_one_run_when_none_is_active_and_waits_while_one_is() -> None:
    with dg.instance_for_test() as instance:
        result = live_ingest_supervisor(dg.build_sensor_context(instance=instance))
        assert isinstance(result, dg.RunRequest)
        assert result.tags == {"quant/live-ingest": "1"}
        _run(instance, dg.DagsterRunStatus.SUCCESS)  # an ended run does not count
        assert isinstance(
            live_ingest_supervisor(dg.build_sensor_context(instance=instance)), dg.RunRequest
        )
        _run(instance, dg.DagsterRunStatus.STARTED)
        skip = live_ingest_supervisor(dg.build_sensor_context(instance=instance))
        assert isinstance(skip, dg.SkipReason) and "STARTED" in skip.skip_message


def test_a_run_a_user_stopped_stays_stopped_until_launched_again() -> None:
    with dg.instance_for_test() as instance:
        _run(instance, dg.DagsterRunStatus.FAILURE)  # crashed or lost: restarted
        assert isinstance(
            live_ingest_supervisor(dg.build_sensor_context(instance=instance)), dg.RunRequest
        )
        _run(instance, dg.DagsterRunStatus.CANCELED)  # terminated from the UI
        skip = live_ingest_supervisor(dg.build_sensor_context(instance=instance))
        assert isinstance(skip, dg.SkipReason) and "stopped by a user" in skip.skip_message
        _run(instance, dg.DagsterRunStatus.SUCCESS)  # launched again by the user (and ended)
        assert isinstance(
            live_ingest_supervisor(dg.build_sensor_context(instance=instance)), dg.RunRequest
        )
