"""NYSE trading sessions (exchange_calendars' XNYS: holidays and half days included).

Times are UTC. Extended hours follow the common US convention: pre-market from 04:00 New York
time, post-market until 20:00 (17:00 after a 13:00 half-day close).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import exchange_calendars as xcals
import pandas as pd

NEW_YORK = ZoneInfo("America/New_York")
CALENDAR_START = "2000-01-03"
PRE_OPEN = time(4, 0)
POST_CLOSE_HOURS = 4


class CalendarError(ValueError):
    """A date that is not a usable trading session; the message names it and why."""


@dataclass(frozen=True)
class TradingSession:
    day: date
    pre_open: datetime
    open: datetime
    close: datetime
    post_close: datetime

    @property
    def regular_minutes(self) -> int:
        return int((self.close - self.open).total_seconds() // 60)

    @property
    def is_half_day(self) -> bool:
        return self.regular_minutes < 390


@lru_cache(maxsize=1)
def nyse() -> xcals.ExchangeCalendar:
    return xcals.get_calendar("XNYS", start=CALENDAR_START)


def is_trading_day(day: date) -> bool:
    cal = nyse()
    stamp = pd.Timestamp(day)
    if not cal.first_session <= stamp <= cal.last_session:
        raise CalendarError(
            f"date={day.isoformat()} is outside the NYSE calendar "
            f"({cal.first_session.date()} .. {cal.last_session.date()})"
        )
    return bool(cal.is_session(stamp))


def session(day: date) -> TradingSession:
    if not is_trading_day(day):
        raise CalendarError(f"date={day.isoformat()} is not an NYSE trading day")
    row = nyse().schedule.loc[pd.Timestamp(day)]
    open_, close = row["open"].to_pydatetime(), row["close"].to_pydatetime()
    return TradingSession(
        day=day,
        pre_open=datetime.combine(day, PRE_OPEN, NEW_YORK).astimezone(UTC),
        open=open_,
        close=close,
        post_close=close + timedelta(hours=POST_CLOSE_HOURS),
    )


def trading_days(start: date, end: date) -> list[date]:
    """Sessions from ``start`` to ``end`` inclusive."""
    if end < start:
        return []
    days = nyse().sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))
    return [d.date() for d in days]


def weekday_holidays(start: date) -> list[date]:
    """Weekdays from ``start`` to the end of the calendar on which the NYSE is closed."""
    cal = nyse()
    weekdays = pd.bdate_range(pd.Timestamp(start), cal.last_session)
    return [d.date() for d in weekdays.difference(cal.sessions)]
