"""A local Binance-spot-compatible exchange (``quant sim binance``) for tests, the demo and
benchmarks.

One port serves the combined WebSocket streams (``/stream?streams=btcusdt@aggTrade/...``:
aggTrade, trade, bookTicker; live SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS) and the REST
market data (``/api/v3/aggTrades|trades|historicalTrades|klines|exchangeInfo|ping|time``) over a
seeded, deterministic trade generator that keeps each symbol's recent history in memory.

Binance behaviour reproduced: per-stream ordering (and nothing promised across streams),
5 incoming messages/s (pings, pongs and JSON all count) then disconnect, 1024 streams per
connection, server pings every 20 s and a disconnect when no pong comes within 60 s, a
24-hour connection lifetime, request weight per IP per minute with 429 + Retry-After and
``X-MBX-USED-WEIGHT-1M``, error bodies ``{"code": -1121, "msg": "Invalid symbol."}``.

``serverShutdown``: Binance's docs only say "a serverShutdown event will be sent when the server
is about to shutdown, resulting in disconnection". The simulator sends it as a bare event,
``{"e":"serverShutdown","E":<ms>}`` (no combined-stream wrapper, since it belongs to no
stream), then closes with 1001 after the grace period. That payload shape is an assumption.

Faults (``faults``): disconnect, stall, malformed, duplicate, reorder, drops, shutdown, slowreader;
from ``--faults`` on a seeded schedule or triggered via ``POST /_sim/faults``. Counters are
at ``GET /_sim/stats``. Modules: ``market`` (generator and store), ``klines`` (plain
aggregation), ``wire`` (HTTP/WebSocket framing), ``ws`` (a stream client), ``rest``,
``faults``, ``server``, ``clock`` (the exchange clock, optionally set back: ``--minute-in``).
"""

from quant_dev.binance_sim.server import SimConfig, Simulator, serve

__all__ = ["SimConfig", "Simulator", "serve"]
