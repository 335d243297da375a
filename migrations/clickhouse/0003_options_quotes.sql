-- Option chain snapshots: one row per contract per snapshot time. ts is the quote's own time,
-- snapshot_ts when the chain was taken (the slice a materialisation appends).
CREATE TABLE IF NOT EXISTS options_quotes
(
    source           LowCardinality(String),
    underlying       LowCardinality(String),
    symbol           String,
    expiry           Date,
    strike           Decimal(38, 8),
    right            Enum8('call' = 1, 'put' = 2),
    ts               DateTime64(3, 'UTC'),
    snapshot_ts      DateTime64(3, 'UTC'),
    session_date     Date,
    bid_price        Nullable(Decimal(38, 8)),
    ask_price        Nullable(Decimal(38, 8)),
    bid_size         Nullable(Decimal(38, 8)),
    ask_size         Nullable(Decimal(38, 8)),
    last_price       Nullable(Decimal(38, 8)),
    underlying_price Nullable(Decimal(38, 8)),
    implied_volatility Nullable(Float64),
    delta            Nullable(Float64),
    gamma            Nullable(Float64),
    theta            Nullable(Float64),
    vega             Nullable(Float64),
    rho              Nullable(Float64),
    version          UInt64,
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(snapshot_ts)
ORDER BY (source, symbol, snapshot_ts)
SETTINGS non_replicated_deduplication_window = 1000;
