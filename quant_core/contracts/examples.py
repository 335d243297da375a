"""One canonical, valid instance of every v1 contract (docs, the demo and smoke tests)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel

from quant_core.contracts.enums import (
    ActionKind,
    AggressorSide,
    Interval,
    OptionRight,
    OrderSide,
    OrderStatus,
    OrderType,
    Session,
    TimeInForce,
    TradingMode,
)
from quant_core.contracts.market import (
    Bar,
    BookSnapshot,
    BookTicker,
    L2Update,
    OptionsQuote,
    PriceLevel,
    Trade,
)
from quant_core.contracts.signals import Action, AlphaSignal, Features, RiskVerdict
from quant_core.contracts.trading import Order, Position

T0 = datetime(2024, 8, 8, 14, 30, tzinfo=UTC)


def examples() -> list[BaseModel]:
    return [
        Bar(
            source="synthetic",
            symbol="SPY",
            interval=Interval.M1,
            ts_event=T0,
            ts_close=T0 + timedelta(milliseconds=59_999),
            open=Decimal("447.91"),
            high=Decimal("448.20"),
            low=Decimal("447.80"),
            close=Decimal("448.02"),
            volume=Decimal(83_690),
            vwap=Decimal("448.01"),
            trade_count=512,
            session=Session.REGULAR,
        ),
        Trade(
            source="binance",
            symbol="BTCUSDT",
            trade_id=3_100_000_001,
            first_trade_id=3_700_000_010,
            last_trade_id=3_700_000_012,
            price=Decimal("56123.45"),
            qty=Decimal("0.0125"),
            taker_side=AggressorSide.BUY,
            ts_event=T0,
            ts_init=T0 + timedelta(milliseconds=4),
        ),
        BookTicker(
            source="binance",
            symbol="BTCUSDT",
            update_id=48_000_000_123,
            bid_price=Decimal("56123.44"),
            bid_qty=Decimal("1.2"),
            ask_price=Decimal("56123.45"),
            ask_qty=Decimal("0.4"),
            ts_init=T0,
        ),
        L2Update(
            source="binance",
            symbol="BTCUSDT",
            first_update_id=100,
            last_update_id=103,
            bids=(PriceLevel(price=Decimal("56123.44"), qty=Decimal("1.2")),),
            asks=(PriceLevel(price=Decimal("56130"), qty=Decimal(0)),),
            ts_event=T0,
        ),
        BookSnapshot(
            source="binance",
            symbol="BTCUSDT",
            ts_event=T0,
            update_id=103,
            synced_from=99,
            bids=(PriceLevel(price=Decimal("56123.44"), qty=Decimal("1.2")),),
            asks=(PriceLevel(price=Decimal("56123.45"), qty=Decimal("0.4")),),
        ),
        OptionsQuote(
            source="synthetic",
            occ_symbol="SPY240816C00450000",
            underlying="SPY",
            expiry=date(2024, 8, 16),
            strike=Decimal(450),
            right=OptionRight.CALL,
            ts_event=T0,
            bid_price=Decimal("3.10"),
            ask_price=Decimal("3.14"),
            bid_size=Decimal(25),
            ask_size=Decimal(40),
            underlying_price=Decimal("448.02"),
            implied_volatility=0.142,
            delta=0.41,
            gamma=0.031,
            theta=-0.27,
            vega=0.22,
            rho=0.03,
        ),
        Order(
            order_id="ord-1",
            symbol="SPY",
            side=OrderSide.BUY,
            type=OrderType.LIMIT,
            time_in_force=TimeInForce.DAY,
            qty=Decimal(10),
            limit_price=Decimal("448.00"),
            status=OrderStatus.PARTIALLY_FILLED,
            filled_qty=Decimal(4),
            avg_fill_price=Decimal("447.99"),
            mode=TradingMode.PAPER,
            created_at=T0,
        ),
        Position(
            symbol="SPY",
            qty=Decimal(4),
            avg_entry_price=Decimal("447.99"),
            market_price=Decimal("448.02"),
            mode=TradingMode.PAPER,
            ts_event=T0,
        ),
        Features(
            feature_set="momentum",
            symbol="SPY",
            ts_event=T0,
            values={"ret_1m": 0.0003, "rv_30m": 0.0121},
        ),
        AlphaSignal(
            signal_id="sig-1",
            strategy_id="mom-1",
            symbol="SPY",
            ts_event=T0,
            score=0.35,
            confidence=0.6,
            horizon_s=1800,
            features_ref="momentum:1",
        ),
        Action(
            action_id="act-1",
            strategy_id="mom-1",
            signal_id="sig-1",
            symbol="SPY",
            kind=ActionKind.ENTER,
            side=OrderSide.BUY,
            qty=Decimal(10),
            mode=TradingMode.PAPER,
            ts_event=T0,
            reason="score above entry threshold",
        ),
        RiskVerdict(
            action_id="act-1",
            approved=True,
            adjusted_qty=Decimal(5),
            reasons=("position limit caps the size at 5",),
            checked_rules=("max_position",),
            ts_event=T0,
        ),
    ]
