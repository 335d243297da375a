-- Order books from Binance depth diffs (quant_resources/live/books.py, docs/order-books.md).
-- Prices and quantities are exact Decimal(18, 8). Like trades and quotes, every table is a
-- ReplacingMergeTree whose sort key identifies a row, so a re-inserted batch (a retry, a
-- replay written again) collapses into the rows already there.

-- One row per level change a book in sync applied: the diff's update ids U..u, its event time
-- E, our receive time, the side and the new quantity at the price (0: the level is removed).
CREATE TABLE IF NOT EXISTS book_updates
(
    source          LowCardinality(String),
    symbol          LowCardinality(String),
    first_update_id UInt64,
    last_update_id  UInt64,
    ts_event        DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    ts_init         DateTime64(9, 'UTC') CODEC(Delta, ZSTD),
    side            LowCardinality(String),
    price           Decimal(18, 8),
    qty             Decimal(18, 8)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (source, symbol, last_update_id, first_update_id, side, price)
SETTINGS non_replicated_deduplication_window = 1000;

-- The top levels (best first) of a book in sync, every interval of exchange time and right
-- after every (re)sync. update_id is the last diff's u applied (the REST lastUpdateId when
-- none was), synced_from the lastUpdateId of the REST snapshot the book was built from.
CREATE TABLE IF NOT EXISTS book_snapshots
(
    source      LowCardinality(String),
    symbol      LowCardinality(String),
    ts_event    DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    update_id   UInt64,
    bid_prices  Array(Decimal(18, 8)),
    bid_qtys    Array(Decimal(18, 8)),
    ask_prices  Array(Decimal(18, 8)),
    ask_qtys    Array(Decimal(18, 8)),
    synced_from UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_event)
ORDER BY (source, symbol, ts_event, update_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Every time a book left sync or a snapshot answer was refused: when (the exchange time of
-- the last diff seen, else the receive time), why (gap, crossed, restart, bad_snapshot,
-- stale_snapshot), the last update id the book held and the id that showed the fault
-- (0: none).
CREATE TABLE IF NOT EXISTS book_resyncs
(
    source         LowCardinality(String),
    symbol         LowCardinality(String),
    ts             DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    reason         LowCardinality(String),
    update_id      UInt64,
    next_update_id UInt64,
    detail         String,
    session_id     LowCardinality(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (source, symbol, ts, reason, update_id, next_update_id)
SETTINGS non_replicated_deduplication_window = 1000;
