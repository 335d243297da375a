-- Which path brought each stored trade: 'stream' (the live websocket), 'rest' (live gap repair
-- or catch-up through REST) or 'archive' (Binance's public archive). coverage_1m counts each
-- per source, symbol and minute. A column with a default, not a key column: live rows written
-- before this migration read as 'stream', and the sorting key is unchanged, so a trade stored
-- once stays one row whichever path brought it. coverage_1m tells the archive apart by source.
ALTER TABLE trades ADD COLUMN IF NOT EXISTS origin LowCardinality(String) DEFAULT 'stream';
