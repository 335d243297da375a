"""The crypto_history reads of ClickHouse: live trades to reconcile with the archive, the
exchange's stored klines, and the per-minute coverage of each ingestion path."""

from __future__ import annotations

from datetime import date

import pyarrow as pa

from quant_core.crypto_reconcile import ARCHIVE_SOURCE, LIVE_SOURCE
from quant_resources.warehouse import WarehouseResource

# The filter sits in a subquery: ClickHouse would read `ts` in WHERE as the alias below.
# One row per live aggregate trade (a re-delivered trade may still be stored twice until
# ReplacingMergeTree merges: any() of a group of identical rows is that row).
LIVE_TRADES_SQL = """
SELECT symbol, trade_id, any(price) AS price, any(qty) AS qty, any(ts) AS ts,
       any(is_buyer_maker) AS is_buyer_maker
FROM (
    SELECT symbol, trade_id, price, qty, ts, is_buyer_maker FROM trades
    WHERE source = {live:String} AND stream = 'aggTrade' AND symbol IN {symbols:Array(String)}
      AND toDate(ts) IN {days:Array(Date)}
)
GROUP BY symbol, trade_id
ORDER BY symbol, trade_id
"""

KLINES_SQL = """
SELECT * EXCEPT version FROM binance_klines_1m FINAL
WHERE source = {src:String} AND symbol IN {symbols:Array(String)}
  AND session_date IN {days:Array(Date)}
ORDER BY symbol, ts
"""

# Aliases are distinct from the columns: ClickHouse resolves an alias before a column of the
# same name, also inside the aggregates. Live trades are split by ``origin`` (migration 0012):
# the websocket stream, or a REST page of the live job's gap repair and catch-up. FINAL: a
# trade two sessions stored (one from the stream, one from REST) is two rows until ClickHouse
# merges them; read as merged (one row per sorting key, the last stored), it counts once.
COVERAGE_SQL = """
SELECT symbol AS sym, toDateTime64(toStartOfMinute(ts), 3, 'UTC') AS minute,
       toDate(ts) AS day,
       countIf(source = {live:String} AND origin != 'rest') AS live_count,
       countIf(source = {live:String} AND origin = 'rest') AS rest_count,
       countIf(source = {archive:String}) AS archive_count
FROM trades FINAL
WHERE source IN ({live:String}, {archive:String}) AND stream = 'aggTrade'
  AND symbol IN {symbols:Array(String)} AND toDate(ts) IN {days:Array(Date)}
GROUP BY sym, minute, day
ORDER BY sym, minute
"""


def live_trades(warehouse: WarehouseResource, symbols: list[str], days: list[date]) -> pa.Table:
    return warehouse.query_arrow(
        LIVE_TRADES_SQL, {"live": LIVE_SOURCE, "symbols": symbols, "days": days}
    )


def stored_klines(warehouse: WarehouseResource, symbols: list[str], days: list[date]) -> pa.Table:
    return warehouse.query_arrow(
        KLINES_SQL, {"src": ARCHIVE_SOURCE, "symbols": symbols, "days": days}
    )


def coverage_rows(warehouse: WarehouseResource, symbols: list[str], days: list[date]) -> pa.Table:
    """``coverage_1m`` rows (without version) of the days: venue ``binance``."""
    found = warehouse.query_arrow(
        COVERAGE_SQL,
        {"live": LIVE_SOURCE, "archive": ARCHIVE_SOURCE, "symbols": symbols, "days": days},
    )
    n = found.num_rows
    return pa.table(
        {
            "source": pa.array([LIVE_SOURCE] * n, pa.string()),
            "symbol": found["sym"].cast(pa.string()),
            "ts": found["minute"],
            "session_date": found["day"],
            "live": found["live_count"].cast(pa.uint64()),
            "rest": found["rest_count"].cast(pa.uint64()),
            "archive": found["archive_count"].cast(pa.uint64()),
        }
    )
