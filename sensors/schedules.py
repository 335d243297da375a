"""Schedules: daily bars after the close on trading days, option snapshots every 15 minutes
while the regular session is open. Non-sessions are skipped with a reason, never failed."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg

from quant_assets.jobs import historical_daily_job, option_snapshot_job
from quant_core.calendar import NEW_YORK, CalendarError, is_trading_day, session


def _session_day(context: dg.ScheduleEvaluationContext) -> tuple[date, datetime, str | None]:
    """(New York day, tick time, reason to skip or None)."""
    when = context.scheduled_execution_time or datetime.now(UTC)
    day = when.astimezone(NEW_YORK).date()
    try:
        closed = not is_trading_day(day)
    except CalendarError as exc:
        return day, when, str(exc)
    return day, when, f"{day} is not an NYSE trading day" if closed else None


@dg.schedule(
    cron_schedule="30 20 * * 1-5",
    execution_timezone="America/New_York",
    job=historical_daily_job,
    description="1m and 1d bars of the session that just ended (after the post-market close).",
)
def daily_bars_schedule(context: dg.ScheduleEvaluationContext):
    day, _, skip = _session_day(context)
    if skip:
        return dg.SkipReason(skip)
    return dg.RunRequest(run_key=f"bars-{day}", partition_key=day.isoformat())


@dg.schedule(
    cron_schedule="*/15 9-16 * * 1-5",
    execution_timezone="America/New_York",
    job=option_snapshot_job,
    description="One option chain snapshot every 15 minutes of the regular session.",
)
def option_snapshot_schedule(context: dg.ScheduleEvaluationContext):
    day, when, skip = _session_day(context)
    if skip:
        return dg.SkipReason(skip)
    sess = session(day)
    if not sess.open <= when.astimezone(UTC) < sess.close:
        return dg.SkipReason(f"{when.isoformat()} is outside the regular session of {day}")
    at = f"{when.astimezone(NEW_YORK):%H:%M}"
    return dg.RunRequest(
        run_key=f"snapshot-{day}-{at}",
        partition_key=day.isoformat(),
        run_config={"ops": {"option_chain_snapshots": {"config": {"at": at}}}},
    )


schedules = [daily_bars_schedule, option_snapshot_schedule]
