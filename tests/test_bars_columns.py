"""``StreamingBarAggregator.add_trades`` (columns) against ``add_trade`` one by one."""

from __future__ import annotations

import itertools
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.bars import StreamingBarAggregator, exact_dot
from quant_core.decode import BookTickerEvent, TradeEvent
from tests.test_bars import MINUTE, latest, trade_sequences

SYMBOLS = ["BTCUSDT", "ETHUSDT", "XRPUSDT"]


def columns(events: list[TradeEvent]) -> tuple:
    code = np.array([SYMBOLS.index(e.symbol) for e in events], dtype=np.int32)

    def col(name: str) -> np.ndarray:
        return np.array([getattr(e, name) for e in events], dtype=np.int64)

    taker = np.array([not e.is_buyer_maker for e in events], dtype=bool)
    return (
        SYMBOLS,
        code,
        col("first_trade_id"),
        col("last_trade_id"),
        col("price"),
        col("qty"),
        col("ts_event_ms"),
        taker,
    )


def state(agg: StreamingBarAggregator) -> tuple:
    return (agg.watermark_ms, agg.duplicates, agg.dropped_late, agg.open_bars(), agg._due)


@settings(max_examples=300, deadline=None)
@given(
    trade_sequences(),
    st.randoms(use_true_random=False),
    st.sampled_from([0, 500, 2000]),
    st.sampled_from([0, MINUTE, 15 * MINUTE]),
    st.booleans(),
)
def test_columns_equal_one_by_one(sequence, rng: random.Random, lateness, retain, shuffle) -> None:
    _, arrivals = sequence
    if shuffle:  # far out of order: bars final early, corrections, drops beyond retention
        arrivals = list(arrivals)
        rng.shuffle(arrivals)
    one = StreamingBarAggregator(lateness_ms=lateness, retain_ms=retain)
    many = StreamingBarAggregator(lateness_ms=lateness, retain_ms=retain)
    got_one, got_many = [], []
    pos = 0
    while pos < len(arrivals):
        size = rng.choice([1, 2, 3, 7, 50, len(arrivals)])
        chunk = arrivals[pos : pos + size]
        pos += size
        if rng.random() < 0.2:  # a gap repair holds bars from some time on
            hold = rng.choice([None, chunk[0].ts_event_ms - rng.randint(0, 3 * MINUTE)])
            got_one.extend(one.hold(hold))
            got_many.extend(many.hold(hold))
        for ev in chunk:
            got_one.extend(one.add_trade(ev))
        got_many.extend(many.add_trades(*columns(chunk)))
        assert latest(got_many) == latest(got_one)
        assert state(many) == state(one)
        if rng.random() < 0.2:
            wm = chunk[-1].ts_event_ms + rng.randint(0, 5 * MINUTE)
            got_one.extend(one.advance(wm))
            got_many.extend(many.advance(wm))
    got_one.extend(one.hold(None))
    got_many.extend(many.hold(None))
    end = 2**62
    got_one.extend(one.flush(end))
    got_many.extend(many.flush(end))
    assert latest(got_many) == latest(got_one)
    assert state(many) == state(one)


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2**63 - 1),
            st.integers(min_value=0, max_value=2**63 - 1),
        ),
        min_size=1,
        max_size=40,
    ),
    st.integers(min_value=1, max_value=5),
)
def test_exact_dot_is_exact_at_int64_limits(pairs, groups) -> None:
    a = np.array([x for x, _ in pairs], dtype=np.int64)
    b = np.array([y for _, y in pairs], dtype=np.int64)
    firsts = np.unique(np.linspace(0, len(pairs) - 1, groups).astype(np.int64))
    bounds = [*firsts.tolist(), len(pairs)]
    want = [sum(x * y for x, y in pairs[lo:hi]) for lo, hi in itertools.pairwise(bounds)]
    assert exact_dot(a, b, firsts) == want


def test_empty_batch_changes_nothing() -> None:
    agg = StreamingBarAggregator()
    empty = np.empty(0, dtype=np.int64)
    assert agg.add_trades(SYMBOLS, empty, empty, empty, empty, empty, empty, empty) == []
    assert agg.watermark_ms is None


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(range(len(SYMBOLS))),
            st.integers(min_value=1, max_value=10**6),  # update id
            st.integers(min_value=1, max_value=10**14),  # bid
            st.integers(min_value=0, max_value=10**3),  # spread
            st.integers(min_value=0, max_value=5 * MINUTE),  # time offset
        ),
        max_size=60,
    ),
    st.integers(min_value=1, max_value=20),
)
def test_mid_bars_from_columns_equal_one_by_one(updates, size) -> None:
    one = StreamingBarAggregator(lateness_ms=500, source="binance_mid", mode="mid")
    many = StreamingBarAggregator(lateness_ms=500, source="binance_mid", mode="mid")
    got_one, got_many = [], []
    t0 = 1723127400000
    for pos in range(0, len(updates), size):
        chunk = updates[pos : pos + size]
        for c, u, bid, spread, dt in chunk:
            ev = BookTickerEvent(SYMBOLS[c], u, bid, 1, bid + spread, 1, None)
            got_one.extend(one.add_book_ticker(ev, t0 + dt))
        cols = [np.array(col, dtype=np.int64) for col in zip(*chunk, strict=True)]
        code, u, bid, spread, dt = cols
        got_many.extend(many.add_book_tickers(SYMBOLS, code, u, bid, bid + spread, t0 + dt))
    assert latest(got_many) == latest(got_one)
    assert state(many) == state(one)
