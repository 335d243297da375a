-- Minute bars of option contracts (OCC symbols), kept apart from equity bars so that replacing
-- a day of one never touches the other.
CREATE TABLE IF NOT EXISTS option_bars_1m AS bars_1m
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (source, symbol, interval, ts)
SETTINGS non_replicated_deduplication_window = 1000;
