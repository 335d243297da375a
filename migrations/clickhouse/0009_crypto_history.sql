-- Crypto history (Binance's public archive) next to the live trades.
--
-- trades: an archive day is replaced as a slice by HistoricalStore, which needs the day and a
-- version per row (live rows keep the defaults: their day, version 0). ts stays
-- DateTime64(3): it is in the sorting and partition keys, so ClickHouse cannot widen it in
-- place, and every reader of trades works in milliseconds. The archive's microseconds (spot
-- files from 2025-01-01) are kept losslessly in ts_sub_us: the exact time is
-- ts + ts_sub_us microseconds (0..999; 0 for millisecond sources such as the live stream).
ALTER TABLE trades ADD COLUMN IF NOT EXISTS ts_sub_us UInt16 DEFAULT 0 AFTER ts;
ALTER TABLE trades ADD COLUMN IF NOT EXISTS session_date Date DEFAULT toDate(ts);
ALTER TABLE trades ADD COLUMN IF NOT EXISTS version UInt64 DEFAULT 0;

-- The exchange's own 1-minute bars from the klines archive, to reconcile our bars with.
-- ts is the open time, ts_close the close time (open + 59.999 s, in milliseconds).
CREATE TABLE IF NOT EXISTS binance_klines_1m
(
    source                 LowCardinality(String),
    symbol                 LowCardinality(String),
    ts                     DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    ts_close               DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    session_date           Date,
    open                   Decimal(38, 8),
    high                   Decimal(38, 8),
    low                    Decimal(38, 8),
    close                  Decimal(38, 8),
    volume                 Decimal(38, 8),
    quote_volume           Decimal(38, 8),
    trade_count            UInt64,
    taker_buy_volume       Decimal(38, 8),
    taker_buy_quote_volume Decimal(38, 8),
    version                UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (source, symbol, ts);

-- Per venue (source), symbol and minute: how many aggregate trades came from the live stream,
-- from REST gap repair and from the archive. A minute where live < archive is data live
-- missed; live = 0 everywhere in a day means no live session ran then.
CREATE TABLE IF NOT EXISTS coverage_1m
(
    source       LowCardinality(String),
    symbol       LowCardinality(String),
    ts           DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    session_date Date,
    live         UInt64,
    rest         UInt64,
    archive      UInt64,
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (source, symbol, ts);
