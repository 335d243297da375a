"""The always-on Binance ingestion pipeline: stream client -> session log -> normaliser ->
gap repair -> aggregator -> sinks (ClickHouse, NATS) with telemetry."""
