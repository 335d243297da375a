"""Every invalid input raises a ValidationError naming the field and the value."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from quant_core.contracts import (
    Action,
    Bar,
    BookTicker,
    L2Update,
    OptionsQuote,
    Order,
    Position,
    RiskVerdict,
    Trade,
)
from quant_core.contracts.examples import examples

EXAMPLES = {type(e): e for e in examples()}


def _with(model, **changes):
    return model.model_validate({**EXAMPLES[model].model_dump(), **changes})


def _error(model, **changes) -> str:
    with pytest.raises(ValidationError) as info:
        _with(model, **changes)
    return str(info.value)


@pytest.mark.parametrize(
    ("model", "field"),
    [
        (Bar, "ts_event"),
        (Bar, "ts_close"),
        (Trade, "ts_event"),
        (Trade, "ts_init"),
        (BookTicker, "ts_init"),
        (L2Update, "ts_event"),
        (OptionsQuote, "ts_event"),
        (Order, "created_at"),
        (Position, "ts_event"),
        (RiskVerdict, "ts_event"),
    ],
)
def test_naive_datetime_is_rejected_naming_field(model, field) -> None:
    naive = datetime(2024, 8, 8, 14, 30)
    message = _error(model, **{field: naive})
    assert field in message
    assert "timezone" in message
    assert "2024, 8, 8, 14, 30" in message


PRICE_FIELDS = [
    (Bar, "open"),
    (Bar, "high"),
    (Bar, "low"),
    (Bar, "close"),
    (Bar, "volume"),
    (Bar, "vwap"),
    (Trade, "price"),
    (Trade, "qty"),
    (BookTicker, "bid_price"),
    (BookTicker, "ask_qty"),
    (OptionsQuote, "bid_price"),
    (OptionsQuote, "strike"),
    (OptionsQuote, "implied_volatility"),
    (OptionsQuote, "delta"),
    (Order, "qty"),
    (Order, "limit_price"),
    (Position, "qty"),
    (Position, "avg_entry_price"),
]


@pytest.mark.parametrize(("model", "field"), PRICE_FIELDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "NaN", "Infinity"])
def test_nan_and_infinity_are_rejected(model, field, bad) -> None:
    message = _error(model, **{field: bad})
    assert field in message
    assert "finite" in message or "number" in message


@pytest.mark.parametrize("symbol", ["A B", "X';DROP", "SPY;", 'A"B', "", " SPY", "A" * 40, "é"])
def test_symbol_pattern(symbol) -> None:
    message = _error(Bar, symbol=symbol)
    assert "symbol" in message
    assert repr(symbol) in message or symbol in message


def test_symbol_is_stored_upper_case() -> None:
    assert _with(Trade, symbol="btcusdt").symbol == "BTCUSDT"


def test_timestamps_are_normalised_to_utc() -> None:
    bar = _with(Bar, ts_event="2024-08-08T10:30:00-04:00", ts_close="2024-08-08T10:30:59.999-04:00")
    assert bar.ts_event.isoformat() == "2024-08-08T14:30:00+00:00"
    assert bar.model_dump_json().count("Z") >= 2


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"high": "447.95"}, "high=447.95 is below max(open=447.91, close=448.02)"),
        ({"low": "448.00"}, "low=448.00 is above min(open=447.91, close=448.02)"),
        ({"volume": "-1"}, "volume"),
        ({"vwap": "500"}, "vwap=500 is outside"),
        ({"trade_count": -1}, "trade_count"),
        ({"ts_close": "2024-08-08T14:31:30Z"}, "within one interval"),
        ({"ts_close": "2024-08-08T14:30:00Z"}, "must lie after"),
        ({"interval": "7m"}, "interval"),
        ({"source": "Not Valid"}, "source"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_bar_invariants(changes, needle) -> None:
    assert needle in _error(Bar, **changes)


def test_bid_above_ask_rejected() -> None:
    assert "bid_price=56200 is above ask_price=56123.45" in _error(BookTicker, bid_price="56200")
    assert "bid_price=3.20 is above ask_price=3.14" in _error(OptionsQuote, bid_price="3.20")


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"occ_symbol": "SPY241316C00450000"}, "invalid expiry date '241316'"),
        ({"occ_symbol": "SPY240230C00450000"}, "invalid expiry date '240230'"),
        ({"occ_symbol": "SPY 240816C00450000"}, "occ_symbol"),
        ({"expiry": "2024-08-17"}, "expiry=2024-08-16"),
        ({"strike": "455"}, "strike=455"),
        ({"right": "put"}, "right=put"),
        ({"underlying": "QQQ"}, "not underlying='QQQ'"),
        ({"expiry": "2024-02-30"}, "expiry"),
        ({"bid_size": "-3"}, "bid_size"),
    ],
)
def test_options_quote_invariants(changes, needle) -> None:
    assert needle in _error(OptionsQuote, **changes)


def test_trade_id_range() -> None:
    assert "first_trade_id=5 is after last_trade_id=4" in _error(
        Trade, first_trade_id=5, last_trade_id=4
    )
    assert "must be given together" in _error(Trade, first_trade_id=5, last_trade_id=None)
    assert _with(Trade, first_trade_id=5, last_trade_id=9).trade_count == 5


def test_l2_update_id_range() -> None:
    assert "first_update_id=9 is after last_update_id=3" in _error(
        L2Update, first_update_id=9, last_update_id=3
    )


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"type": "market"}, "limit_price=448.00 is not allowed for type=market"),
        ({"limit_price": None}, "limit_price=None is required for type=limit"),
        ({"type": "stop_limit"}, "stop_price=None is required for type=stop_limit"),
        ({"filled_qty": "11"}, "filled_qty=11 exceeds qty=10"),
        ({"status": "filled"}, "status=filled needs filled_qty == qty"),
        ({"avg_fill_price": None}, "avg_fill_price is required"),
        ({"updated_at": "2024-08-08T14:00:00Z"}, "is before created_at"),
        ({"time_in_force": "forever"}, "time_in_force"),
    ],
)
def test_order_invariants(changes, needle) -> None:
    assert needle in _error(Order, **changes)


def test_position_and_signals() -> None:
    assert "avg_entry_price is required" in _error(Position, avg_entry_price=None)
    assert "kind=enter needs a side" in _error(Action, side=None)
    assert "kind=hold takes no side" in _error(Action, kind="hold")
    assert "approved=False needs at least one" in _error(RiskVerdict, approved=False, reasons=())
    flat = _with(Position, qty=0, avg_entry_price=None)
    assert flat.unrealized_pnl is None
    assert _with(Position).unrealized_pnl == Decimal("0.12")


def test_contracts_are_immutable() -> None:
    bar = EXAMPLES[Bar]
    with pytest.raises(ValidationError):
        bar.open = Decimal(1)  # type: ignore[misc]
    assert bar.ts_close - bar.ts_event == timedelta(milliseconds=59_999)
