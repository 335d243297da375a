-- One row per (source, symbol, interval, bar open). Prices and sizes are exact decimals with
-- 8 places (Binance's precision; equities need 4). ReplacingMergeTree(version): a corrected
-- bar (late trade, re-run partition) is a new version of the same key, never a silent edit.
CREATE TABLE IF NOT EXISTS bars_1m
(
    source                 LowCardinality(String),
    symbol                 LowCardinality(String),
    interval               LowCardinality(String) DEFAULT '1m',
    ts                     DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    ts_close               DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    session_date           Date,
    session                LowCardinality(String),
    open                   Decimal(38, 8),
    high                   Decimal(38, 8),
    low                    Decimal(38, 8),
    close                  Decimal(38, 8),
    volume                 Decimal(38, 8),
    quote_volume           Decimal(38, 8),
    vwap                   Decimal(38, 8),
    trade_count            UInt64,
    taker_buy_volume       Decimal(38, 8),
    taker_buy_quote_volume Decimal(38, 8),
    adjustment             LowCardinality(String) DEFAULT 'raw',
    adj_factor             Float64 DEFAULT 1,
    version                UInt64,
    ingested_at            DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (source, symbol, interval, ts)
SETTINGS non_replicated_deduplication_window = 1000;
