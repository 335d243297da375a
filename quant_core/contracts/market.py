"""Market-data contracts: bars, trades, top of book, depth diffs and option quotes.

Timestamp semantics follow nautilus_trader: ``ts_event`` is when the venue says the event
happened (bar open for bars), ``ts_init`` is when this platform received or created it.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Self

from pydantic import Field, model_validator

from quant_core.contracts.enums import Adjustment, AggressorSide, Interval, OptionRight, Session
from quant_core.contracts.types import (
    Contract,
    NonNegDecimal,
    NonNegInt,
    PosDecimal,
    Price,
    Source,
    Symbol,
    UtcDatetime,
)


class Bar(Contract):
    """OHLCV bar: ``ts_event`` = bar open, ``ts_close`` = open + interval - 1 ms."""

    source: Source
    symbol: Symbol
    interval: Interval
    ts_event: UtcDatetime
    ts_close: UtcDatetime
    open: Price
    high: Price
    low: Price
    close: Price
    volume: NonNegDecimal
    vwap: Price | None = None
    trade_count: NonNegInt | None = None
    quote_volume: NonNegDecimal | None = None
    taker_buy_volume: NonNegDecimal | None = None
    taker_buy_quote_volume: NonNegDecimal | None = None
    session: Session | None = None
    adjustment: Adjustment = Adjustment.RAW

    @model_validator(mode="after")
    def _invariants(self) -> Self:
        body_top, body_bottom = max(self.open, self.close), min(self.open, self.close)
        if self.high < body_top:
            raise ValueError(f"high={self.high} is below max(open={self.open}, close={self.close})")
        if self.low > body_bottom:
            raise ValueError(f"low={self.low} is above min(open={self.open}, close={self.close})")
        if self.vwap is not None and not self.low <= self.vwap <= self.high:
            raise ValueError(f"vwap={self.vwap} is outside [low={self.low}, high={self.high}]")
        span = self.ts_close - self.ts_event
        if span.total_seconds() <= 0 or span > self.interval.duration:
            raise ValueError(
                f"ts_close={self.ts_close.isoformat()} must lie after ts_event="
                f"{self.ts_event.isoformat()} and within one interval ({self.interval.value})"
            )
        if self.taker_buy_volume is not None and self.taker_buy_volume > self.volume:
            raise ValueError(
                f"taker_buy_volume={self.taker_buy_volume} exceeds volume={self.volume}"
            )
        return self


class Trade(Contract):
    """One exchange trade, or one aggregated trade (``first_trade_id``..``last_trade_id``)."""

    source: Source
    symbol: Symbol
    trade_id: NonNegInt
    price: Price
    qty: PosDecimal
    taker_side: AggressorSide
    ts_event: UtcDatetime
    ts_init: UtcDatetime | None = None
    first_trade_id: NonNegInt | None = None
    last_trade_id: NonNegInt | None = None

    @model_validator(mode="after")
    def _id_range(self) -> Self:
        first, last = self.first_trade_id, self.last_trade_id
        if (first is None) != (last is None):
            raise ValueError(
                f"first_trade_id={first} and last_trade_id={last} must be given together"
            )
        if first is not None and last is not None and first > last:
            raise ValueError(f"first_trade_id={first} is after last_trade_id={last}")
        return self

    @property
    def trade_count(self) -> int:
        if self.first_trade_id is None or self.last_trade_id is None:
            return 1
        return self.last_trade_id - self.first_trade_id + 1


def _check_bid_ask(bid: Decimal | None, ask: Decimal | None, what: str) -> None:
    if bid is not None and ask is not None and bid > ask:
        raise ValueError(f"{what}bid_price={bid} is above {what}ask_price={ask}")


class BookTicker(Contract):
    """Best bid and ask. Binance spot sends no event time, so ``ts_event`` is optional."""

    source: Source
    symbol: Symbol
    update_id: NonNegInt
    bid_price: Price
    bid_qty: NonNegDecimal
    ask_price: Price
    ask_qty: NonNegDecimal
    ts_init: UtcDatetime
    ts_event: UtcDatetime | None = None

    @model_validator(mode="after")
    def _not_crossed(self) -> Self:
        _check_bid_ask(self.bid_price, self.ask_price, "")
        return self


class PriceLevel(Contract):
    price: Price
    qty: NonNegDecimal = Field(description="Zero removes the level.")


class L2Update(Contract):
    """Depth diff covering venue update ids ``first_update_id``..``last_update_id``."""

    source: Source
    symbol: Symbol
    first_update_id: NonNegInt
    last_update_id: NonNegInt
    bids: tuple[PriceLevel, ...] = ()
    asks: tuple[PriceLevel, ...] = ()
    ts_event: UtcDatetime
    ts_init: UtcDatetime | None = None

    @model_validator(mode="after")
    def _id_range(self) -> Self:
        if self.first_update_id > self.last_update_id:
            raise ValueError(
                f"first_update_id={self.first_update_id} is after "
                f"last_update_id={self.last_update_id}"
            )
        return self


class BookSnapshot(Contract):
    """The best levels of an order book kept in sync with depth diffs (best first).

    ``update_id`` is the last diff id applied, ``synced_from`` the ``lastUpdateId`` of the REST
    snapshot the book was built from. ``bids_complete`` / ``asks_complete`` say whether every
    level shown lies inside the price range that snapshot covered: beyond it, levels are unknown
    until a diff changes them."""

    source: Source
    symbol: Symbol
    ts_event: UtcDatetime
    update_id: NonNegInt
    synced_from: NonNegInt
    bids: tuple[PriceLevel, ...] = ()
    asks: tuple[PriceLevel, ...] = ()
    bids_complete: bool = True
    asks_complete: bool = True

    @model_validator(mode="after")
    def _not_crossed(self) -> Self:
        if self.bids and self.asks and self.bids[0].price >= self.asks[0].price:
            raise ValueError(
                f"best bid {self.bids[0].price} is not below best ask {self.asks[0].price}"
            )
        return self


# Alpaca/OCC compact form: root (1-6 letters/digits), YYMMDD, C or P, strike x 1000 in 8 digits.
OCC_PATTERN = r"^([A-Z0-9]{1,6})(\d{6})([CP])(\d{8})$"
_OCC = re.compile(OCC_PATTERN)


class OccSymbol:
    """Parsed OCC option symbol (compact form, no padding spaces)."""

    __slots__ = ("expiry", "right", "root", "strike")

    def __init__(self, text: str) -> None:
        match = _OCC.match(text)
        if match is None:
            raise ValueError(f"occ_symbol={text!r} is not an OCC symbol (ROOT YYMMDD C|P STRIKE8)")
        root, ymd, right, strike = match.groups()
        try:
            self.expiry = date(2000 + int(ymd[:2]), int(ymd[2:4]), int(ymd[4:]))
        except ValueError as exc:
            raise ValueError(f"occ_symbol={text!r} has an invalid expiry date {ymd!r}") from exc
        self.root = root
        self.right = OptionRight.CALL if right == "C" else OptionRight.PUT
        self.strike = Decimal(strike) / 1000

    @staticmethod
    def format(root: str, expiry: date, right: OptionRight, strike: Decimal) -> str:
        code = "C" if right is OptionRight.CALL else "P"
        return f"{root}{expiry:%y%m%d}{code}{int(strike * 1000):08d}"


class OptionsQuote(Contract):
    """Quote of one option contract, with the fields a feed may omit left optional."""

    source: Source
    occ_symbol: str = Field(pattern=OCC_PATTERN)
    underlying: Symbol
    expiry: date
    strike: Price
    right: OptionRight
    ts_event: UtcDatetime
    bid_price: NonNegDecimal | None = None
    ask_price: NonNegDecimal | None = None
    bid_size: NonNegDecimal | None = None
    ask_size: NonNegDecimal | None = None
    last_price: Price | None = None
    underlying_price: Price | None = None
    implied_volatility: float | None = Field(default=None, ge=0)
    delta: float | None = Field(default=None, ge=-1, le=1)
    gamma: float | None = None
    theta: float | None = None
    vega: float | None = None
    rho: float | None = None
    ts_init: UtcDatetime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_bid_ask(self.bid_price, self.ask_price, "")
        occ = OccSymbol(self.occ_symbol)
        parsed = (occ.expiry, occ.right, occ.strike)
        given = (self.expiry, self.right, self.strike)
        if parsed != given:
            raise ValueError(
                f"occ_symbol={self.occ_symbol!r} encodes expiry={occ.expiry}, right={occ.right}, "
                f"strike={occ.strike} but the quote says expiry={self.expiry}, "
                f"right={self.right}, strike={self.strike}"
            )
        # Adjusted contracts carry a suffixed root (AAPL1); share classes drop the dot (BRKB).
        if not occ.root.startswith(self.underlying.replace(".", "")[:6]):
            raise ValueError(
                f"occ_symbol={self.occ_symbol!r} has root {occ.root!r}, "
                f"not underlying={self.underlying!r}"
            )
        return self
