-- Daily bars derived from the regular session of bars_1m (same columns), so the two agree.
CREATE TABLE IF NOT EXISTS bars_1d AS bars_1m
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYear(ts)
ORDER BY (source, symbol, interval, ts)
SETTINGS non_replicated_deduplication_window = 1000;
