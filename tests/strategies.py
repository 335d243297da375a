"""Hypothesis strategies that generate valid instances of every v1 contract."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import strategies as st

from quant_core.contracts import (
    Action,
    ActionKind,
    Adjustment,
    AggressorSide,
    AlphaSignal,
    Bar,
    BookSnapshot,
    BookTicker,
    Features,
    Interval,
    L2Update,
    OccSymbol,
    OptionRight,
    OptionsQuote,
    Order,
    OrderSide,
    OrderStatus,
    OrderType,
    Position,
    PriceLevel,
    RiskVerdict,
    Session,
    TimeInForce,
    Trade,
    TradingMode,
)

symbols = st.from_regex(r"\A[A-Z][A-Z0-9]{0,5}([./-][A-Z0-9]{1,4})?\Z")
sources = st.sampled_from(["alpaca", "binance", "synthetic", "lean"])
ids = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z")
# Any zone: the contracts must normalise them all to UTC.
zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9, minutes=30))]
)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1), timezones=zones
)
prices = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(10**7), places=4)
sizes = st.decimals(min_value=Decimal(0), max_value=Decimal(10**9), places=6)
pos_sizes = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(10**9), places=6)
unit = st.floats(min_value=-1, max_value=1, allow_nan=False)
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)


@st.composite
def bars(draw) -> Bar:
    o, c, extra_hi, extra_lo = (draw(prices) for _ in range(4))
    high = max(o, c) + extra_hi / 1000
    low = max(min(o, c) - extra_lo / 1000, Decimal("0.0001"))
    low = min(low, o, c)
    interval = draw(st.sampled_from(list(Interval)))
    start = draw(instants)
    volume = draw(sizes)
    return Bar(
        source=draw(sources),
        symbol=draw(symbols),
        interval=interval,
        ts_event=start,
        ts_close=start + interval.duration - timedelta(milliseconds=1),
        open=o,
        high=high,
        low=low,
        close=c,
        volume=volume,
        vwap=draw(st.one_of(st.none(), st.just((high + low) / 2))),
        trade_count=draw(st.one_of(st.none(), st.integers(0, 10**6))),
        quote_volume=draw(st.one_of(st.none(), sizes)),
        taker_buy_volume=draw(st.one_of(st.none(), st.just(volume / 2))),
        session=draw(st.one_of(st.none(), st.sampled_from(list(Session)))),
        adjustment=draw(st.sampled_from(list(Adjustment))),
    )


@st.composite
def trades(draw) -> Trade:
    aggregated = draw(st.booleans())
    first = draw(st.integers(0, 10**12))
    return Trade(
        source=draw(sources),
        symbol=draw(symbols),
        trade_id=draw(st.integers(0, 10**12)),
        price=draw(prices),
        qty=draw(pos_sizes),
        taker_side=draw(st.sampled_from(list(AggressorSide))),
        ts_event=draw(instants),
        ts_init=draw(st.one_of(st.none(), instants)),
        first_trade_id=first if aggregated else None,
        last_trade_id=first + draw(st.integers(0, 1000)) if aggregated else None,
    )


@st.composite
def book_tickers(draw) -> BookTicker:
    bid = draw(prices)
    return BookTicker(
        source=draw(sources),
        symbol=draw(symbols),
        update_id=draw(st.integers(0, 10**12)),
        bid_price=bid,
        bid_qty=draw(sizes),
        ask_price=bid + draw(prices) / 10**4,
        ask_qty=draw(sizes),
        ts_init=draw(instants),
        ts_event=draw(st.one_of(st.none(), instants)),
    )


levels = st.builds(PriceLevel, price=prices, qty=sizes)


@st.composite
def l2_updates(draw) -> L2Update:
    first = draw(st.integers(0, 10**12))
    return L2Update(
        source=draw(sources),
        symbol=draw(symbols),
        first_update_id=first,
        last_update_id=first + draw(st.integers(0, 100)),
        bids=tuple(draw(st.lists(levels, max_size=5))),
        asks=tuple(draw(st.lists(levels, max_size=5))),
        ts_event=draw(instants),
        ts_init=draw(st.one_of(st.none(), instants)),
    )


@st.composite
def book_snapshots(draw) -> BookSnapshot:
    """Bids strictly below asks: the best bid is drawn, the best ask above it."""
    best_bid = draw(prices)
    gap = draw(prices) / 10**4
    bids = tuple(draw(st.lists(levels, max_size=5)))
    bids = tuple(PriceLevel(price=min(b.price, best_bid), qty=b.qty) for b in bids)
    asks = tuple(draw(st.lists(levels, max_size=5)))
    asks = tuple(PriceLevel(price=best_bid + gap + a.price, qty=a.qty) for a in asks)
    return BookSnapshot(
        source=draw(sources),
        symbol=draw(symbols),
        ts_event=draw(instants),
        update_id=draw(st.integers(0, 10**12)),
        synced_from=draw(st.integers(0, 10**12)),
        bids=bids,
        asks=asks,
        bids_complete=draw(st.booleans()),
        asks_complete=draw(st.booleans()),
    )


@st.composite
def options_quotes(draw) -> OptionsQuote:
    root = draw(st.from_regex(r"\A[A-Z]{1,5}\Z"))
    expiry = draw(st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)))
    right = draw(st.sampled_from(list(OptionRight)))
    strike = Decimal(draw(st.integers(1, 99_999_999))) / 1000
    bid = draw(st.one_of(st.none(), sizes.map(lambda d: d / 1000)))
    ask = None if bid is None else bid + draw(prices) / 1000
    return OptionsQuote(
        source=draw(sources),
        occ_symbol=OccSymbol.format(root, expiry, right, strike),
        underlying=root,
        expiry=expiry,
        strike=strike,
        right=right,
        ts_event=draw(instants),
        bid_price=bid,
        ask_price=ask,
        bid_size=draw(st.one_of(st.none(), sizes)),
        ask_size=draw(st.one_of(st.none(), sizes)),
        last_price=draw(st.one_of(st.none(), prices)),
        underlying_price=draw(st.one_of(st.none(), prices)),
        implied_volatility=draw(st.one_of(st.none(), st.floats(0, 10))),
        delta=draw(st.one_of(st.none(), unit)),
        gamma=draw(st.one_of(st.none(), finite)),
        theta=draw(st.one_of(st.none(), finite)),
        vega=draw(st.one_of(st.none(), finite)),
        rho=draw(st.one_of(st.none(), finite)),
    )


@st.composite
def orders(draw) -> Order:
    kind = draw(st.sampled_from(list(OrderType)))
    qty = draw(pos_sizes)
    status = draw(st.sampled_from(list(OrderStatus)))
    filled = qty if status is OrderStatus.FILLED else draw(st.sampled_from([Decimal(0), qty / 2]))
    created = draw(instants)
    return Order(
        order_id=draw(ids),
        client_order_id=draw(st.one_of(st.none(), ids)),
        symbol=draw(symbols),
        side=draw(st.sampled_from(list(OrderSide))),
        type=kind,
        time_in_force=draw(st.sampled_from(list(TimeInForce))),
        qty=qty,
        limit_price=draw(prices) if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None,
        stop_price=draw(prices) if kind in (OrderType.STOP, OrderType.STOP_LIMIT) else None,
        status=status,
        filled_qty=filled,
        avg_fill_price=draw(prices) if filled > 0 else None,
        mode=draw(st.sampled_from(list(TradingMode))),
        created_at=created,
        updated_at=draw(st.one_of(st.none(), st.just(created + timedelta(seconds=1)))),
    )


@st.composite
def positions(draw) -> Position:
    qty = draw(st.decimals(min_value=-(10**6), max_value=10**6, places=4))
    return Position(
        symbol=draw(symbols),
        qty=qty,
        avg_entry_price=draw(prices) if qty != 0 else None,
        market_price=draw(st.one_of(st.none(), prices)),
        realized_pnl=draw(st.decimals(min_value=-(10**6), max_value=10**6, places=2)),
        mode=draw(st.sampled_from(list(TradingMode))),
        ts_event=draw(instants),
    )


features = st.builds(
    Features,
    feature_set=ids,
    version=st.integers(1, 100),
    symbol=symbols,
    ts_event=instants,
    values=st.dictionaries(
        st.from_regex(r"\A[a-z][a-z0-9_]{0,10}\Z"), finite, min_size=1, max_size=6
    ),
)
alpha_signals = st.builds(
    AlphaSignal,
    signal_id=ids,
    strategy_id=ids,
    symbol=symbols,
    ts_event=instants,
    score=unit,
    confidence=st.floats(0, 1),
    horizon_s=st.integers(1, 10**6),
    features_ref=st.one_of(st.none(), ids),
)


@st.composite
def actions(draw) -> Action:
    kind = draw(st.sampled_from(list(ActionKind)))
    hold = kind is ActionKind.HOLD
    return Action(
        action_id=draw(ids),
        strategy_id=draw(ids),
        signal_id=draw(st.one_of(st.none(), ids)),
        symbol=draw(symbols),
        kind=kind,
        side=None if hold else draw(st.sampled_from(list(OrderSide))),
        qty=Decimal(0) if hold else draw(pos_sizes),
        mode=draw(st.sampled_from(list(TradingMode))),
        ts_event=draw(instants),
        reason=draw(st.text(max_size=40)),
    )


@st.composite
def risk_verdicts(draw) -> RiskVerdict:
    approved = draw(st.booleans())
    reasons = draw(
        st.lists(st.text(min_size=1, max_size=30), min_size=0 if approved else 1, max_size=3)
    )
    return RiskVerdict(
        action_id=draw(ids),
        approved=approved,
        adjusted_qty=draw(st.one_of(st.none(), pos_sizes)) if approved else None,
        reasons=tuple(reasons),
        checked_rules=tuple(draw(st.lists(ids, max_size=3))),
        ts_event=draw(instants),
    )


STRATEGIES = {
    Bar: bars(),
    Trade: trades(),
    BookTicker: book_tickers(),
    L2Update: l2_updates(),
    BookSnapshot: book_snapshots(),
    OptionsQuote: options_quotes(),
    Order: orders(),
    Position: positions(),
    Features: features,
    AlphaSignal: alpha_signals,
    Action: actions(),
    RiskVerdict: risk_verdicts(),
}
