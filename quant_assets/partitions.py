"""Partition definitions, defined once and imported by every asset that uses them."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import dagster as dg

from quant_core.calendar import weekday_holidays
from quant_resources.migrations import load
from quant_resources.settings import history_start

clickhouse_migrations = load("clickhouse")
postgres_migrations = load("postgres")

clickhouse_migration_partitions = dg.StaticPartitionsDefinition(
    [m.key for m in clickhouse_migrations]
)
postgres_migration_partitions = dg.StaticPartitionsDefinition([m.key for m in postgres_migrations])


def _trading_day_partitions() -> dg.TimeWindowPartitionsDefinition:
    """One partition per NYSE session from QUANT_HISTORY_START to today: weekdays, minus the
    exchange's holidays (exchange_calendars), keyed YYYY-MM-DD in New York time."""
    start = date.fromisoformat(history_start())
    new_york = ZoneInfo("America/New_York")
    holidays = [datetime.combine(d, time(), new_york) for d in weekday_holidays(start)]
    return dg.TimeWindowPartitionsDefinition(
        start=start.isoformat(),
        fmt="%Y-%m-%d",
        cron_schedule="0 0 * * 1-5",
        timezone="America/New_York",
        end_offset=1,  # today's session is a partition while it trades (intraday snapshots)
        exclusions=holidays,
    )


trading_day_partitions = _trading_day_partitions()
