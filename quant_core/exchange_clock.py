"""The exchange's clock as the live job knows it, and how it is recorded for replay.

Bars close on exchange time. Trades carry it, but a quiet market sends none, so the live job
also asks the exchange what time it is (``/api/v3/time``) and moves the bar watermark to that
reading minus the lateness (``StreamingBarAggregator.heartbeat``). It never uses the local wall
clock for this: a capture replayed by a simulator, or a host whose clock is off, has exchange
times far from now, and a watermark from the wall clock would close (and drop) their minutes.

Every heartbeat that changes the aggregator is written to the session log as a connection
record whose meta is ``clock_meta(exchange_ms)``; replay applies the same heartbeat at the same
place in the record order (``clock_reading``), so live and replay build the same bars.
"""

from __future__ import annotations

from typing import Any

CLOCK_EVENT = "clock"


def clock_meta(exchange_ms: int) -> dict[str, Any]:
    """Meta of the connection record of a heartbeat at exchange time ``exchange_ms``."""
    return {"event": CLOCK_EVENT, "exchange_ms": int(exchange_ms)}


def clock_reading(meta: dict[str, Any]) -> int | None:
    """The exchange time of a heartbeat record, None for any other connection record."""
    if meta.get("event") != CLOCK_EVENT:
        return None
    value = meta.get("exchange_ms")
    if type(value) is not int:
        raise ValueError(f"clock record has exchange_ms={value!r}: expected an integer (ms)")
    return value


class ExchangeClock:
    """Readings of the exchange's clock (``/api/v3/time``) against the local clock.

    ``now_ms`` is the latest reading, never extrapolated: between readings the exchange may
    publish slower than real time (a simulator replaying a capture, a paused market), and an
    estimate ahead of it would close minutes the exchange has not ended. Readings never go back.
    ``offset_ms`` (exchange minus local, at the middle of the request) estimates the exchange
    time of a moment with no reading, e.g. the minute a fresh session starts in.
    """

    def __init__(self) -> None:
        self.now_ms: int | None = None
        self.offset_ms: int | None = None

    def observe(self, sent_local_ms: int, server_ms: int, received_local_ms: int) -> int:
        self.offset_ms = server_ms - (sent_local_ms + received_local_ms) // 2
        if self.now_ms is None or server_ms > self.now_ms:
            self.now_ms = server_ms
        return self.now_ms

    def estimate(self, local_ms: int) -> int | None:
        """Exchange time at local time ``local_ms`` by the last offset (None before a reading)."""
        return None if self.offset_ms is None else local_ms + self.offset_ms
