"""Development tooling, never imported by the product packages (``quant_core``,
``quant_resources``, ``quant_assets``, ``sensors``, ``quant_definitions``): the local
ClickHouse-compatible endpoint on chDB, the Binance and Alpaca simulators, and the launcher of
child processes used by the demo, ``make dev``, the benchmarks and the tests."""
