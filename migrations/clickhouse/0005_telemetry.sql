-- Operational metrics in long form (one row per metric per minute per component), so a new
-- metric needs no migration and Grafana can pivot them.
CREATE TABLE IF NOT EXISTS telemetry
(
    source     LowCardinality(String),
    symbol     LowCardinality(String),
    component  LowCardinality(String),
    session_id LowCardinality(String),
    ts         DateTime64(3, 'UTC'),
    metric     LowCardinality(String),
    value      Float64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (source, symbol, ts, component, metric)
TTL toDateTime(ts) + INTERVAL 400 DAY;
