"""Enumerations of the v1 contracts. Values are lower-case strings on the wire."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum


class Interval(StrEnum):
    S1 = "1s"
    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    D1 = "1d"

    @property
    def duration(self) -> timedelta:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[self.value[-1]]
        return timedelta(**{unit: int(self.value[:-1])})


class Session(StrEnum):
    """Equity trading session a bar belongs to (crypto trades around the clock: ``continuous``)."""

    PRE = "pre"
    REGULAR = "regular"
    POST = "post"
    CONTINUOUS = "continuous"


class Adjustment(StrEnum):
    RAW = "raw"
    SPLIT = "split"
    DIVIDEND = "dividend"
    ALL = "all"


class AggressorSide(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OptionRight(StrEnum):
    CALL = "call"
    PUT = "put"


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"
    OPG = "opg"
    CLS = "cls"


class OrderStatus(StrEnum):
    NEW = "new"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"


class TradingMode(StrEnum):
    BACKTEST = "backtest"
    PAPER = "paper"
    LIVE = "live"


class ActionKind(StrEnum):
    ENTER = "enter"
    EXIT = "exit"
    REBALANCE = "rebalance"
    HOLD = "hold"
