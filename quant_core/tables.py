"""Arrow schemas of the warehouse tables, shared by every producer (providers, aggregator,
replay) so that a frame built anywhere inserts anywhere."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

PRICE = pa.decimal128(38, 8)
TS = pa.timestamp("ms", tz="UTC")

BARS_1M = pa.schema(
    [
        ("source", pa.string()),
        ("symbol", pa.string()),
        ("interval", pa.string()),
        ("ts", TS),
        ("ts_close", TS),
        ("session_date", pa.date32()),
        ("session", pa.string()),
        ("open", PRICE),
        ("high", PRICE),
        ("low", PRICE),
        ("close", PRICE),
        ("volume", PRICE),
        ("quote_volume", PRICE),
        ("vwap", PRICE),
        ("trade_count", pa.uint64()),
        ("taker_buy_volume", PRICE),
        ("taker_buy_quote_volume", PRICE),
        ("adjustment", pa.string()),
        ("adj_factor", pa.float64()),
    ]
)

OPTIONS_QUOTES = pa.schema(
    [
        ("source", pa.string()),
        ("underlying", pa.string()),
        ("symbol", pa.string()),
        ("expiry", pa.date32()),
        ("strike", PRICE),
        ("right", pa.string()),
        ("ts", TS),
        ("snapshot_ts", TS),
        ("session_date", pa.date32()),
        ("bid_price", PRICE),
        ("ask_price", PRICE),
        ("bid_size", PRICE),
        ("ask_size", PRICE),
        ("last_price", PRICE),
        ("underlying_price", PRICE),
        ("implied_volatility", pa.float64()),
        ("delta", pa.float64()),
        ("gamma", pa.float64()),
        ("theta", pa.float64()),
        ("vega", pa.float64()),
        ("rho", pa.float64()),
    ]
)


def decimal_from_scaled(values, scale: int) -> pa.Array:
    """Integers counting units of 10**-scale (e.g. cents for scale 2) -> exact Decimal(38, 8).

    Built straight from the unscaled 128-bit representation: no float or Python Decimal on the
    way, so it is exact and vectorised. Values must fit int64 once scaled to 8 places.
    """
    unscaled = np.asarray(values, dtype=np.int64) * np.int64(10 ** (PRICE.scale - scale))
    words = np.empty((unscaled.size, 2), dtype=np.int64)
    words[:, 0] = unscaled
    words[:, 1] = unscaled >> 63  # sign extension into the high word
    return pa.Array.from_buffers(PRICE, unscaled.size, [None, pa.py_buffer(words.tobytes())])


class BeyondInt64(ValueError):
    """A decimal that does not fit int64 once scaled; ``index`` is its position."""

    def __init__(self, index: int) -> None:
        super().__init__(f"value at index {index} is beyond int64 once scaled by 10**8")
        self.index = index


def scaled_int64(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Exact Decimal(38, 8) -> int64 counts of 10**-8, read from the 128-bit words (the inverse
    of ``decimal_from_scaled``); ``BeyondInt64`` when one does not fit. Nulls read as 0."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.type != PRICE:
        raise TypeError(f"expected {PRICE}, got {values.type}")
    words = np.frombuffer(values.buffers()[1], dtype=np.int64)
    words = words[2 * values.offset : 2 * (values.offset + len(values))]
    low, high = words[0::2], words[1::2]
    beyond = np.flatnonzero(high != (low >> 63))
    if beyond.size:
        raise BeyondInt64(int(beyond[0]))
    return low.copy()
