"""WarehouseResource on chDB in-process and on the HTTP endpoint: the same calls, same results."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pytest

from quant_resources.migrations import ClickHouseLedger, load, migrate
from quant_resources.warehouse import WarehouseError

DEC = pa.decimal128(38, 8)
T0 = datetime(2024, 8, 8, 13, 30, tzinfo=UTC)


@pytest.fixture
def wh(warehouse):
    migrations = load("clickhouse")
    migrate(ClickHouseLedger(warehouse), migrations, migrations[-1].key)
    return warehouse


def bars(symbols=("SPY", "QQQ"), minutes=3, price=Decimal("100.5"), source="synthetic") -> pa.Table:
    rows = [(s, T0 + timedelta(minutes=m), price + m) for s in symbols for m in range(minutes)]
    n = len(rows)
    p = pa.array([r[2] for r in rows], DEC)
    return pa.table(
        {
            "source": [source] * n,
            "symbol": [r[0] for r in rows],
            "interval": ["1m"] * n,
            "ts": pa.array([r[1] for r in rows], pa.timestamp("ms", "UTC")),
            "ts_close": pa.array(
                [r[1] + timedelta(milliseconds=59_999) for r in rows], pa.timestamp("ms", "UTC")
            ),
            "session_date": pa.array([date(2024, 8, 8)] * n, pa.date32()),
            "session": ["regular"] * n,
            "open": p,
            "high": p,
            "low": p,
            "close": p,
            "volume": pa.array([Decimal(10)] * n, DEC),
            "quote_volume": pa.array([Decimal(10) * r[2] for r in rows], DEC),
            "vwap": p,
            "trade_count": pa.array([3] * n, pa.uint64()),
            "taker_buy_volume": pa.array([Decimal(4)] * n, DEC),
            "taker_buy_quote_volume": pa.array([Decimal(4) * r[2] for r in rows], DEC),
            "version": pa.array([1] * n, pa.uint64()),
        }
    )


def count(wh, where: str = "1", params=None) -> int:
    return wh.scalar(f"SELECT count() FROM bars_1m FINAL WHERE {where}", params)


def test_insert_arrow_and_query_with_bound_parameters(wh) -> None:
    assert wh.insert("bars_1m", bars()) == 6
    got = wh.query_arrow(
        "SELECT symbol, ts, close FROM bars_1m WHERE symbol = {sym:String} ORDER BY ts",
        {"sym": "SPY"},
    )
    assert got.num_rows == 3
    assert got.column("close").to_pylist() == [Decimal("100.5"), Decimal("101.5"), Decimal("102.5")]
    assert got.column("ts")[0].as_py() == T0
    df = wh.query_df("SELECT symbol, count() AS n FROM bars_1m GROUP BY symbol ORDER BY symbol")
    assert df.to_dict("records") == [{"symbol": "QQQ", "n": 3}, {"symbol": "SPY", "n": 3}]


def test_insert_pandas_frame(wh) -> None:
    frame = bars(minutes=2).to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert wh.insert("bars_1m", frame) == 4
    assert count(wh) == 4


def test_bound_parameter_carrying_sql_is_data(wh) -> None:
    wh.insert("bars_1m", bars())
    evil = "SPY' OR 1=1; DROP TABLE bars_1m; --"
    assert count(wh, "symbol = {s:String}", {"s": evil}) == 0
    assert count(wh) == 6  # the table is still there


def test_dedup_token_drops_a_retried_insert(wh) -> None:
    data = bars()
    wh.insert("bars_1m", data, dedup_token="batch-1")
    wh.insert("bars_1m", data, dedup_token="batch-1")
    assert wh.scalar("SELECT count() FROM bars_1m") == 6  # no FINAL: dropped at insert
    wh.insert("bars_1m", data, dedup_token="batch-2")
    assert wh.scalar("SELECT count() FROM bars_1m") == 12


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (
            lambda t: t.append_column("bogus", pa.array([1] * t.num_rows)),
            "column 'bogus' does not exist",
        ),
        (
            lambda t: t.set_column(1, "symbol", pa.array(["SPY; DROP"] * t.num_rows)),
            "symbol='SPY; DROP'",
        ),
    ],
)
def test_bad_writes_are_refused_and_write_nothing(wh, mutate, needle) -> None:
    with pytest.raises(WarehouseError, match=needle.replace("(", r"\(")):
        wh.insert("bars_1m", mutate(bars()))
    assert count(wh) == 0


def test_unknown_table_and_wrong_type(wh) -> None:
    with pytest.raises(WarehouseError, match="table 'nope' does not exist"):
        wh.insert("nope", bars())
    with pytest.raises(WarehouseError, match="not a valid table"):
        wh.insert("bars_1m; DROP TABLE x", bars())
    wrong = bars().set_column(
        bars().column_names.index("trade_count"), "trade_count", pa.array(["x"] * 6)
    )
    with pytest.raises(WarehouseError, match=r"insert into .bars_1m. failed"):
        wh.insert("bars_1m", wrong)
    assert count(wh) == 0


SLICE = "source = {src:String} AND session_date = {d:Date}"


def test_replace_slice_replaces_only_its_slice(wh) -> None:
    wh.insert("bars_1m", bars(source="alpaca"))  # another source, same day: untouched
    params = {"src": "synthetic", "d": date(2024, 8, 8)}
    wh.replace_slice("bars_1m", SLICE, params, bars(minutes=3))
    wh.replace_slice("bars_1m", SLICE, params, bars(symbols=("SPY",), minutes=2, price=Decimal(7)))
    assert wh.scalar("SELECT count() FROM bars_1m WHERE source = 'synthetic'") == 2
    assert count(wh, "source = 'synthetic' AND close < 10") == 2
    assert count(wh, "source = 'alpaca'") == 6


def test_replace_slice_failure_keeps_previous_rows(wh, monkeypatch) -> None:
    params = {"src": "synthetic", "d": date(2024, 8, 8)}
    wh.replace_slice("bars_1m", SLICE, params, bars())
    before = wh.query_rows("SELECT symbol, ts, close FROM bars_1m FINAL ORDER BY symbol, ts")
    real_insert = wh.client.insert_arrow

    def half_then_fail(table, data, **kwargs):
        real_insert(table, data.slice(0, 2), **kwargs)  # part of the new version lands ...
        raise ConnectionError("connection dropped mid-insert")  # ... then the write dies

    monkeypatch.setattr(wh.client, "insert_arrow", half_then_fail)
    with pytest.raises(ConnectionError):
        wh.replace_slice("bars_1m", SLICE, params, bars(price=Decimal(1)))
    monkeypatch.undo()
    after = wh.query_rows("SELECT symbol, ts, close FROM bars_1m FINAL ORDER BY symbol, ts")
    assert after == before
    assert wh.scalar("SELECT count() FROM bars_1m") == 6
