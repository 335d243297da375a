-- Exchange trades (trade or aggTrade streams) and top-of-book quotes. ts is the venue's event
-- time, ts_init our receive time (ns). A trade id is unique per (source, symbol), so ordering
-- by (source, symbol, ts, trade_id) lets ReplacingMergeTree drop a re-delivered trade.
CREATE TABLE IF NOT EXISTS trades
(
    source         LowCardinality(String),
    symbol         LowCardinality(String),
    stream         LowCardinality(String),
    trade_id       UInt64,
    first_trade_id UInt64,
    last_trade_id  UInt64,
    price          Decimal(38, 8),
    qty            Decimal(38, 8),
    is_buyer_maker Bool,
    ts             DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    ts_init        DateTime64(9, 'UTC') CODEC(Delta, ZSTD),
    session_id     LowCardinality(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (source, symbol, ts, trade_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS quotes
(
    source     LowCardinality(String),
    symbol     LowCardinality(String),
    update_id  UInt64,
    bid_price  Decimal(38, 8),
    bid_qty    Decimal(38, 8),
    ask_price  Decimal(38, 8),
    ask_qty    Decimal(38, 8),
    ts         DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    ts_init    DateTime64(9, 'UTC') CODEC(Delta, ZSTD),
    session_id LowCardinality(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (source, symbol, ts, update_id)
SETTINGS non_replicated_deduplication_window = 1000;
