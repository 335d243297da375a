-- The state of every historical slice replacement (HistoricalStore), one row per (table,
-- source, session day, version) and state change: staged -> clickhouse -> complete. A row
-- left in staged or clickhouse names a publication that failed between the stores (error
-- says why); the next replacement of that table and source repairs it. `slice` holds what
-- the repair needs (the slice's predicate and the day's lake file), as JSON.
CREATE TABLE IF NOT EXISTS slice_publications
(
    table_name   LowCardinality(String),
    source       LowCardinality(String),
    session_date Date,
    version      UInt64,
    state        LowCardinality(String),
    rows         UInt64,
    holder       String,
    error        String,
    slice        String,
    updated_at   DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (table_name, source, session_date, version);
