"""Klines computed from the simulator's own stored trades by a deliberately plain loop.

This is an independent check of the platform's bar aggregator: it shares no code with
``quant_core`` (only the simulator's integer amounts), so the two can disagree.
"""

from __future__ import annotations

from quant_dev.binance_sim.market import SymbolMarket, fmt8, round_half_even_8

INTERVALS_MS = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}


def bucket_range(
    market: SymbolMarket,
    step: int,
    start: int | None,
    end: int | None,
    limit: int,
    now_ms: int,
) -> list[int]:
    """Open times of the klines to return, like Binance: open time within [start, end], the
    first `limit` from start when start is given, else the `limit` most recent."""
    if market.next_trade_id == market.first_trade_id:
        return []
    first = market.trade_time(market.first_trade_id) // step * step
    if market.evicted:
        first += step  # the oldest bucket lost trades to the ring: never serve it half-empty
    last = now_ms // step * step
    if end is not None:
        last = min(last, end // step * step)
    if start is not None:
        first = max(first, -(-start // step) * step)
        return list(range(first, min(last, first + (limit - 1) * step) + 1, step))
    return list(range(max(first, last - (limit - 1) * step), last + 1, step))


def compute(
    market: SymbolMarket,
    interval: str,
    start: int | None = None,
    end: int | None = None,
    limit: int = 500,
    now_ms: int = 0,
) -> list[list]:
    step = INTERVALS_MS[interval]
    opens = bucket_range(market, step, start, end, limit, now_ms)
    if not opens:
        return []
    lo = market.trade_ids_from_time(opens[0])
    hi = market.trade_ids_from_time(opens[-1] + step)
    # An empty leading bucket opens at the previous close, as Binance's do.
    prev_close = market.trade(lo - 1)[1] if lo > market.first_trade_id else None
    by_open: dict[int, list] = {}
    for _, price, qty, t, maker in market.trades(lo, hi):
        k = t - t % step
        acc = by_open.get(k)
        if acc is None:
            # open, high, low, close, volume, quote(1e-16), n, taker buy vol, taker buy quote
            acc = by_open[k] = [price, price, price, price, 0, 0, 0, 0, 0]
        acc[1] = max(acc[1], price)
        acc[2] = min(acc[2], price)
        acc[3] = price
        acc[4] += qty
        acc[5] += price * qty
        acc[6] += 1
        if not maker:  # the buyer was the taker
            acc[7] += qty
            acc[8] += price * qty
    rows = []
    for k in opens:
        acc = by_open.get(k)
        if acc is None:
            if prev_close is None:
                continue
            acc = [prev_close] * 4 + [0, 0, 0, 0, 0]
        o, h, low, c, v, q, n, bv, bq = acc
        rows.append(
            [
                k,
                fmt8(o),
                fmt8(h),
                fmt8(low),
                fmt8(c),
                fmt8(v),
                k + step - 1,
                fmt8(round_half_even_8(q)),
                n,
                fmt8(bv),
                fmt8(round_half_even_8(bq)),
                "0",
            ]
        )
        prev_close = c
    return rows
