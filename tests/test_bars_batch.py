"""``quant_core.bars_batch.aggregate_batch`` against the reference ``aggregate_trades``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.bars import aggregate_trades
from quant_core.bars_batch import CHUNK_ROWS, aggregate_batch

T0 = 1_723_075_200_000  # 2024-08-08 00:00 UTC, ms
MAX_PRICE = 2**62 // 10**8  # prices and sizes up to ~4.6e10 units (scaled: < 2**62)


@st.composite
def trade_tables(draw) -> pa.Table:
    n = draw(st.integers(0, 60))
    symbols = draw(
        st.lists(st.sampled_from(["BTCUSDT", "ethusdt", "ETHUSDT", "AB"]), min_size=n, max_size=n)
    )
    # Few distinct ids and minutes: duplicates (same symbol, minute, first id) are common.
    keys = draw(st.lists(st.integers(1, 12), min_size=n, max_size=n))
    spans = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    minute_ms = draw(st.lists(st.integers(0, 3 * 60_000 - 1), min_size=n, max_size=n))
    # Small prices/sizes make x.5 ties of the half-even rounding frequent; huge ones test the
    # 128-bit limbs.
    amounts = st.one_of(
        st.integers(1, 300), st.integers(1, 10**12), st.integers(10**15, MAX_PRICE * 10**8)
    )
    prices = draw(st.lists(amounts, min_size=n, max_size=n))
    qtys = draw(
        st.lists(st.one_of(st.integers(1, 300), st.integers(1, 10**9)), min_size=n, max_size=n)
    )
    makers = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    unit = draw(st.sampled_from(["ms", "us"]))
    per = 1000 if unit == "us" else 1
    extra = draw(st.lists(st.integers(0, per - 1), min_size=n, max_size=n))
    return pa.table(
        {
            "symbol": pa.array(symbols, pa.string()),
            "trade_id": pa.array(keys, pa.int64()),
            "first_trade_id": pa.array(keys, pa.int64()),
            "last_trade_id": pa.array(
                [k + s for k, s in zip(keys, spans, strict=True)], pa.int64()
            ),
            "price": pa.array(prices, pa.int64()),
            "qty": pa.array(qtys, pa.int64()),
            "ts_event": pa.array(
                [(T0 + m) * per + e for m, e in zip(minute_ms, extra, strict=True)], pa.int64()
            ).cast(pa.timestamp(unit, tz="UTC")),
            "is_buyer_maker": pa.array(makers, pa.bool_()),
        }
    )


def agree(table: pa.Table) -> None:
    try:
        expected = aggregate_trades(table)
    except Exception:  # a sum beyond int64 once scaled: both refuse
        with pytest.raises(ValueError, match="int64"):
            aggregate_batch(table)
        return
    assert aggregate_batch(table).equals(expected)


@settings(max_examples=200, deadline=None)
@given(trade_tables())
def test_equals_reference_on_any_rows(table: pa.Table) -> None:
    agree(table)


@settings(max_examples=100, deadline=None)
@given(trade_tables())
def test_equals_reference_on_sorted_rows(table: pa.Table) -> None:
    # Sorted input takes the no-sort path.
    if table.num_rows:
        table = table.sort_by(
            [("symbol", "ascending"), ("ts_event", "ascending"), ("first_trade_id", "ascending")]
        )
    agree(table)


def test_rounding_ties_go_to_even() -> None:
    # 0.5 units of 10**-8 in quote volume: price 1e-8 x qty 0.5 -> 0 (even); 3 x 0.5 -> 2.
    for price, want in ((1, 0), (3, 2)):
        table = pa.table(
            {
                "symbol": ["X"],
                "trade_id": [1],
                "price": pa.array([price], pa.int64()),
                "qty": pa.array([50_000_000], pa.int64()),
                "ts_event": pa.array([T0], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
                "is_buyer_maker": [False],
            }
        )
        bars = aggregate_batch(table)
        assert bars.equals(aggregate_trades(table))
        assert bars["quote_volume"][0].as_py() * 10**8 == want
        assert bars["taker_buy_quote_volume"][0].as_py() * 10**8 == want


def test_bars_spanning_chunks() -> None:
    n = CHUNK_ROWS * 2 + 123
    rng = np.random.default_rng(5)
    ts = np.sort(rng.integers(T0, T0 + 7 * 60_000, n))  # 7 bars over three chunks
    table = pa.table(
        {
            "symbol": pa.array(["BTCUSDT"] * n),
            "trade_id": pa.array(np.arange(n) // 2),  # every id twice: half are duplicates
            "price": pa.array(rng.integers(1, 10**13, n)),
            "qty": pa.array(rng.integers(1, 10**10, n)),
            "ts_event": pa.array(ts).cast(pa.timestamp("ms", tz="UTC")),
            "is_buyer_maker": pa.array(rng.random(n) < 0.5),
        }
    )
    assert aggregate_batch(table).equals(aggregate_trades(table))


def test_bad_input_is_refused_like_the_reference() -> None:
    good = pa.table(
        {
            "symbol": ["X"],
            "trade_id": [1],
            "price": ["1.5"],
            "qty": ["2"],
            "ts_event": pa.array([T0], pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "is_buyer_maker": [True],
        }
    )
    assert aggregate_batch(good).equals(aggregate_trades(good))
    for column, value, error in (
        ("price", pa.array([1.5]), TypeError),
        ("price", pa.array(["1.123456789"]), ValueError),
        ("price", pa.array(["0"]), ValueError),
        ("qty", pa.array([None], pa.string()), ValueError),
        ("ts_event", pa.array([T0], pa.timestamp("ms")), TypeError),
    ):
        bad = good.set_column(good.column_names.index(column), column, value)
        with pytest.raises(error):
            aggregate_batch(bad)
    with pytest.raises(ValueError, match="lack"):
        aggregate_batch(good.drop_columns(["qty"]))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, 5 * 60_000), min_size=1, max_size=80),
    st.lists(st.integers(1, 3), min_size=80, max_size=80),
    st.sampled_from(["ms", "us"]),
)
def test_equals_reference_on_one_time_ordered_series(
    offsets: list[int], steps: list[int], unit: str
) -> None:
    """An archive file's shape (one symbol, times in order, ids increasing), which takes the
    path that finds bars by searching minute edges: equal times, empty minutes, a minute's
    last millisecond."""
    n = len(offsets)
    rng = np.random.default_rng(n)
    per = 1000 if unit == "us" else 1
    ts = (T0 + np.array(offsets)) * per + rng.integers(0, per, n)
    first = np.cumsum(steps[:n])
    table = pa.table(
        {
            "symbol": pa.array(["BTCUSDT"] * n),
            "trade_id": pa.array(first),
            "first_trade_id": pa.array(first),
            "last_trade_id": pa.array(first + rng.integers(0, 2, n)),
            "price": pa.array(rng.integers(1, 10**13, n)),
            "qty": pa.array(rng.integers(1, 10**10, n)),
            "ts_event": pa.array(np.sort(ts)).cast(pa.timestamp(unit, tz="UTC")),
            "is_buyer_maker": pa.array(rng.random(n) < 0.5),
        }
    )
    agree(table)
