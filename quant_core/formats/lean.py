"""QuantConnect Lean minute CSVs (AlgoSeek data) -> v1 contracts.

Equity and option rows: milliseconds since midnight America/New_York, prices in deci-cents
(price x 10000), bars stamped at their open. Crypto rows: milliseconds since midnight UTC,
plain decimal prices.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from quant_core.contracts import Bar, Interval, OccSymbol, OptionRight, OptionsQuote, Session

NEW_YORK = ZoneInfo("America/New_York")
DECI_CENTS = Decimal(10_000)
MINUTE_CLOSE = timedelta(minutes=1) - timedelta(milliseconds=1)
REGULAR_OPEN, REGULAR_CLOSE = time(9, 30), time(16, 0)

_OPTION_FILE = re.compile(
    r"^(?P<day>\d{8})_(?P<root>[a-z0-9]+)_minute_(?P<kind>quote|trade|openinterest)_"
    r"(?P<style>american|european)_(?P<right>call|put)_(?P<strike>\d+)_(?P<expiry>\d{8})\.csv$"
)


def equity_session(ts_local: datetime) -> Session:
    clock = ts_local.time()
    if clock < REGULAR_OPEN:
        return Session.PRE
    if clock >= REGULAR_CLOSE:
        return Session.POST
    return Session.REGULAR


def _local_open(day: date, ms_since_midnight: int) -> datetime:
    return datetime.combine(day, time(), NEW_YORK) + timedelta(milliseconds=ms_since_midnight)


def parse_equity_trade_row(symbol: str, day: date, row: list[str], source: str = "lean") -> Bar:
    ms, o, h, low, c, v = row
    local = _local_open(day, int(ms))
    start = local.astimezone(UTC)
    return Bar(
        source=source,
        symbol=symbol,
        interval=Interval.M1,
        ts_event=start,
        ts_close=start + MINUTE_CLOSE,
        open=Decimal(o) / DECI_CENTS,
        high=Decimal(h) / DECI_CENTS,
        low=Decimal(low) / DECI_CENTS,
        close=Decimal(c) / DECI_CENTS,
        volume=Decimal(v),
        session=equity_session(local),
    )


def parse_crypto_trade_row(symbol: str, day: date, row: list[str], source: str = "lean") -> Bar:
    ms, o, h, low, c, v = row
    start = datetime.combine(day, time(), UTC) + timedelta(milliseconds=int(ms))
    return Bar(
        source=source,
        symbol=symbol,
        interval=Interval.M1,
        ts_event=start,
        ts_close=start + MINUTE_CLOSE,
        open=Decimal(o),
        high=Decimal(h),
        low=Decimal(low),
        close=Decimal(c),
        volume=Decimal(v),
        session=Session.CONTINUOUS,
    )


class OptionFile:
    """What a Lean option CSV's name encodes: day, underlying, right, strike and expiry."""

    def __init__(self, name: str) -> None:
        match = _OPTION_FILE.match(name)
        if match is None:
            raise ValueError(f"file name {name!r} is not a Lean option minute CSV name")
        self.day = datetime.strptime(match["day"], "%Y%m%d").date()
        self.underlying = match["root"].upper()
        self.kind = match["kind"]
        self.right = OptionRight(match["right"])
        self.strike = Decimal(match["strike"]) / DECI_CENTS
        self.expiry = datetime.strptime(match["expiry"], "%Y%m%d").date()
        self.occ_symbol = OccSymbol.format(self.underlying, self.expiry, self.right, self.strike)


def parse_option_quote_row(file: OptionFile, row: list[str], source: str = "lean") -> OptionsQuote:
    """A quote row -> the quote at the close of that minute (bid/ask close and last sizes)."""
    ms, _bo, _bh, _bl, bid_close, bid_size, _ao, _ah, _al, ask_close, ask_size = row
    close_local = _local_open(file.day, int(ms)) + MINUTE_CLOSE
    return OptionsQuote(
        source=source,
        occ_symbol=file.occ_symbol,
        underlying=file.underlying,
        expiry=file.expiry,
        strike=file.strike,
        right=file.right,
        ts_event=close_local.astimezone(UTC),
        bid_price=Decimal(bid_close) / DECI_CENTS,
        bid_size=Decimal(bid_size),
        ask_price=Decimal(ask_close) / DECI_CENTS,
        ask_size=Decimal(ask_size),
    )
