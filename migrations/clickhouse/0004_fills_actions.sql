-- Execution and decision records of strategies (paper, live or backtest).
CREATE TABLE IF NOT EXISTS fills
(
    source      LowCardinality(String),
    symbol      LowCardinality(String),
    fill_id     String,
    order_id    String,
    strategy_id LowCardinality(String),
    side        Enum8('buy' = 1, 'sell' = 2),
    qty         Decimal(38, 8),
    price       Decimal(38, 8),
    fee         Decimal(38, 8),
    mode        Enum8('backtest' = 1, 'paper' = 2, 'live' = 3),
    ts          DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (source, symbol, ts, fill_id);

CREATE TABLE IF NOT EXISTS actions
(
    source      LowCardinality(String),
    symbol      LowCardinality(String),
    action_id   String,
    strategy_id LowCardinality(String),
    signal_id   String,
    kind        Enum8('enter' = 1, 'exit' = 2, 'rebalance' = 3, 'hold' = 4),
    side        Nullable(Enum8('buy' = 1, 'sell' = 2)),
    qty         Decimal(38, 8),
    mode        Enum8('backtest' = 1, 'paper' = 2, 'live' = 3),
    approved    Nullable(Bool),
    reasons     Array(String),
    ts          DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (source, symbol, ts, action_id);
