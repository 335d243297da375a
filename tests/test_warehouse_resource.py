"""WarehouseResource on chDB in-process and on the HTTP endpoint: the same calls, same results."""

from __future__ import annotations

import time
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


def stages(wh) -> list[str]:
    return [
        r[0]
        for r in wh.query_rows(
            "SELECT name FROM system.tables WHERE database = currentDatabase() "
            "AND startsWith(name, '_stage_')"
        )
    ]


def test_slice_replacement_publishes_every_piece_together_as_one_part(wh) -> None:
    params = {"src": "synthetic", "d": date(2024, 8, 8)}
    wh.replace_slice("bars_1m", SLICE, params, bars(minutes=5))
    with wh.slice_replacement("bars_1m", SLICE, params) as stage:
        stage.add(bars(symbols=("SPY",), price=Decimal(7)))
        stage.add(bars(symbols=("QQQ",), minutes=2, price=Decimal(8)))
        # staged, not published: readers still see the previous slice, whole
        assert count(wh) == 10 and count(wh, "close < 10") == 0
        assert stages(wh) == [stage.name]
    assert stage.rows == 5
    assert count(wh) == 5 and count(wh, "close < 10") == 5
    assert wh.scalar("SELECT count() FROM bars_1m") == 5  # old versions deleted, not shadowed
    assert wh.scalar("SELECT uniqExact(version) FROM bars_1m") == 1
    parts = wh.query_rows(
        "SELECT rows FROM system.parts WHERE database = currentDatabase() "
        "AND table = 'bars_1m' AND active"
    )
    # One move, one part, and the part the delete emptied is gone: the next delete (a
    # mutation) has no merge of pieces or of empty parts to wait for.
    assert parts == [(5,)]
    assert stages(wh) == []


def test_slice_replacement_failing_midway_publishes_nothing(wh) -> None:
    params = {"src": "synthetic", "d": date(2024, 8, 8)}
    wh.replace_slice("bars_1m", SLICE, params, bars())
    before = wh.query_rows("SELECT symbol, ts, close, version FROM bars_1m ORDER BY symbol, ts")
    with (
        pytest.raises(WarehouseError, match="symbol='BAD SYMBOL'"),
        wh.slice_replacement("bars_1m", SLICE, params) as stage,
    ):
        stage.add(bars(symbols=("SPY",), price=Decimal(7)))
        stage.add(bars(symbols=("BAD SYMBOL",)))
    with (
        pytest.raises(RuntimeError, match="provider died"),
        wh.slice_replacement("bars_1m", SLICE, params) as stage,
    ):
        stage.add(bars(price=Decimal(9)))
        raise RuntimeError("provider died")
    after = wh.query_rows("SELECT symbol, ts, close, version FROM bars_1m ORDER BY symbol, ts")
    assert after == before
    assert stages(wh) == []


def test_a_stage_left_by_a_dead_process_is_dropped_a_day_later(wh) -> None:
    from quant_resources.warehouse import STAGE_PREFIX, STALE_STAGE_NS

    old = f"{STAGE_PREFIX}bars_1m_{1_700_000_000 * 10**9}"
    recent = f"{STAGE_PREFIX}bars_1m_{time.time_ns() - STALE_STAGE_NS // 2}"
    for name in (old, recent):
        wh.command(f"CREATE TABLE {name} AS bars_1m ENGINE = Memory")
    wh.replace_slice("bars_1m", SLICE, {"src": "synthetic", "d": date(2024, 8, 8)}, bars())
    assert stages(wh) == [recent]  # another run may still be filling that one


def test_an_empty_replacement_is_refused_and_a_newer_version_is_never_deleted(wh) -> None:
    params = {"src": "synthetic", "d": date(2024, 8, 8)}
    wh.replace_slice("bars_1m", SLICE, params, bars())
    with pytest.raises(WarehouseError, match="refusing to replace a slice of 'bars_1m' with no"):
        wh.replace_slice("bars_1m", SLICE, params, bars().slice(0, 0))
    assert count(wh) == 6
    (stored,) = wh.query_rows("SELECT DISTINCT version FROM bars_1m")
    with wh.staging("bars_1m") as stage:  # a writer whose version is older than the stored
        stage.add(bars(price=Decimal(1)))
        wh.move(stage, stored[0] - 1)
        wh.delete_older("bars_1m", SLICE, params, stored[0] - 1)
    assert (
        wh.scalar("SELECT count() FROM bars_1m WHERE version = {v:UInt64}", {"v": stored[0]}) == 6
    )


def test_threads_sharing_one_resource_query_at_the_same_time(wh) -> None:
    """One client per URL serves every thread of a process (a Dagster step's worker threads, a
    check thread beside a writer): overlapping queries must not be refused as "concurrent
    queries within the same session" (the HTTP client's generated session id did that)."""
    from concurrent.futures import ThreadPoolExecutor

    wh.insert("bars_1m", bars(minutes=30))

    def slow_count(_: int) -> int:
        # sleepEachRow keeps each query open long enough for the others to overlap it.
        return wh.scalar("SELECT count() FROM bars_1m FINAL WHERE sleepEachRow(0.002) = 0")

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(slow_count, range(12))) == [60] * 12
