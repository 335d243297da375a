"""The synthetic market's exchange clock: the wall clock, optionally shifted by a fixed offset
(``quant sim binance --minute-in``). A test that needs a whole exchange minute can put
the next minute boundary a few seconds after the start instead of waiting for the wall
clock's (tlive: up to a minute saved per such test). ``quant live`` reads the exchange's clock
from ``/api/v3/time``, so it follows the shift."""

from __future__ import annotations

import time

OFFSET_MS = 0  # set once at start-up, before the server runs (one simulator per process)


def set_offset(offset_ms: int) -> None:
    global OFFSET_MS
    OFFSET_MS = int(offset_ms)


def now_ms() -> int:
    """The exchange's time now, in ms since the epoch."""
    return int(time.time() * 1000) + OFFSET_MS
