"""Deterministic seeded trade generator and the in-memory trade store it fills.

Amounts are integers in units of 1e-8 (Binance's 8-decimal strings), so the stored history,
the stream frames and the REST rows are all formatted from the same exact numbers.

Each symbol draws from its own RNG in fixed blocks, so the sequence of trades of a symbol
(prices, quantities, sides, aggregation) depends only on the seed and the symbol, never on
the generation rate, tick timing or which other symbols run alongside it. Timestamps are the
server's wall clock and are therefore not reproducible.
"""

from __future__ import annotations

import bisect
import functools
import zlib
from dataclasses import dataclass

import numpy as np

from quant_dev.binance_sim import clock  # tlive: the exchange clock may be shifted

SCALE = 10**8
BLOCK = 4096  # events drawn from a symbol's RNG at a time
MAX_TRADES_PER_AGG = 3
# bookTicker `u` = aggregate id + this offset: per-stream it increases like Binance's, and a
# test can pair a bookTicker with the aggregate it followed (to observe `reorder` faults).
BOOK_ID_OFFSET = 40_000_000_000


@functools.lru_cache(maxsize=1 << 16)  # prices walk near their last ones; quantities repeat
def fmt8(units: int) -> str:
    """Units of 1e-8 -> Binance's decimal string with 8 places ('56123.45000000')."""
    sign = "-" if units < 0 else ""
    units = abs(units)
    return f"{sign}{units // SCALE}.{units % SCALE:08d}"


def round_half_even_8(units16: int) -> int:
    """A product of two 1e-8 amounts (units of 1e-16) -> units of 1e-8, half to even."""
    q, r = divmod(units16, SCALE)
    if r > SCALE // 2 or (r == SCALE // 2 and q % 2 == 1):
        q += 1
    return q


@dataclass(frozen=True)
class SymbolSpec:
    symbol: str  # upper-case, e.g. BTCUSDT
    base: str
    quote: str
    start_price: int  # units of 1e-8
    tick: int
    qty_step: int
    max_qty_steps: int


_QUOTES = ("USDT", "USDC", "FDUSD", "BTC", "ETH", "BNB", "EUR", "TRY")
_KNOWN = {
    "BTCUSDT": (60_000 * SCALE, SCALE // 100, 1_000, 5_000),
    "ETHUSDT": (3_000 * SCALE, SCALE // 100, 10_000, 5_000),
    "BNBUSDT": (550 * SCALE, SCALE // 100, 100_000, 2_000),
    "SOLUSDT": (150 * SCALE, SCALE // 100, 100_000, 5_000),
}


def spec_for(symbol: str) -> SymbolSpec:
    name = symbol.upper()
    if not name.isalnum() or not 5 <= len(name) <= 20:
        raise ValueError(f"symbol={symbol!r} is not an exchange symbol like btcusdt")
    quote = next((q for q in _QUOTES if name.endswith(q) and len(name) > len(q)), name[-4:])
    base = name[: len(name) - len(quote)]
    if name in _KNOWN:
        price, tick, step, steps = _KNOWN[name]
    else:
        # Stable across processes (crc32, not hash()) so a seed means the same market anywhere.
        price = (10 + zlib.crc32(name.encode()) % 990) * SCALE
        tick, step, steps = SCALE // 1000, 1_000_000, 5_000
    return SymbolSpec(name, base, quote, price, tick, step, steps)


class SymbolMarket:
    """One symbol: its generator and a bounded ring of its most recent trades/aggregates."""

    def __init__(self, spec: SymbolSpec, seed: int, start_trade_id: int, capacity: int) -> None:
        self.spec = spec
        self.stream = spec.symbol.lower()
        self._rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(spec.symbol.encode())]))
        self.capacity = capacity
        # Trades: id t lives at t % capacity while t >= first_trade_id.
        self.t_price = np.zeros(capacity, np.int64)
        self.t_qty = np.zeros(capacity, np.int64)
        self.t_time = np.zeros(capacity, np.int64)
        self.t_maker = np.zeros(capacity, np.bool_)
        # Aggregates: id a lives at a % capacity; price/time/side are those of its trades.
        self.a_first = np.zeros(capacity, np.int64)
        self.a_count = np.zeros(capacity, np.int8)
        self.a_qty = np.zeros(capacity, np.int64)
        self.start_trade_id = start_trade_id
        self.start_agg_id = start_trade_id // 2 + 1  # distinct ranges catch a/t mix-ups
        self.next_trade_id = start_trade_id
        self.next_agg_id = self.start_agg_id
        self.last_time = 0
        self._price = spec.start_price
        self._block: tuple[np.ndarray, ...] | None = None
        self._pos = BLOCK

    # -- generation -------------------------------------------------------------------------

    def _draw_block(self) -> None:
        rng, spec = self._rng, self.spec
        steps = rng.integers(-3, 4, BLOCK)
        prices = np.maximum(self._price + np.cumsum(steps) * spec.tick, spec.tick)
        self._price = int(prices[-1])
        counts = rng.integers(1, MAX_TRADES_PER_AGG + 1, BLOCK)
        makers = rng.random(BLOCK) < 0.5
        qtys = rng.integers(1, spec.max_qty_steps + 1, (BLOCK, MAX_TRADES_PER_AGG)) * spec.qty_step
        book_qty = rng.integers(1, spec.max_qty_steps * 20, (BLOCK, 2)) * spec.qty_step
        self._block = (prices, counts, makers, qtys, book_qty)
        self._pos = 0

    def generate(self, n: int, now_ms: int) -> list[tuple]:
        """Generate n aggregate trades at wall-clock time now_ms; store and return them.

        Each returned event is (a, f, l, price, [qty per trade], agg_qty, maker, T, book),
        book = (u, bid, bid_qty, ask, ask_qty).
        """
        # Exchange time never goes backwards, even if the wall clock does.
        t = self.last_time = max(self.last_time, now_ms)
        out: list[tuple] = []
        while n > 0:
            if self._pos >= BLOCK:
                self._draw_block()
            assert self._block is not None
            take = min(n, BLOCK - self._pos)
            sl = slice(self._pos, self._pos + take)
            self._pos += take
            n -= take
            out.extend(self._store(*(part[sl] for part in self._block), t))
        return out

    def _store(self, prices, counts, makers, qtys, book_qty, t: int) -> list[tuple]:
        n = len(prices)
        mask = np.arange(MAX_TRADES_PER_AGG) < counts[:, None]
        trade_qty = qtys[mask]  # row-major: the trades of each aggregate in order
        agg_qty = np.where(mask, qtys, 0).sum(axis=1)
        n_trades = len(trade_qty)
        t0, a0 = self.next_trade_id, self.next_agg_id
        firsts = t0 + np.concatenate(([0], np.cumsum(counts)[:-1]))
        self._put(
            (self.t_price, self.t_qty, self.t_time, self.t_maker),
            t0,
            n_trades,
            (np.repeat(prices, counts), trade_qty, t, np.repeat(makers, counts)),
        )
        self._put((self.a_first, self.a_count, self.a_qty), a0, n, (firsts, counts, agg_qty))
        self.next_trade_id += n_trades
        self.next_agg_id += n
        tick = self.spec.tick
        events = []
        q_rows = qtys.tolist()
        for i, (p, c, m, f, aq, bq) in enumerate(
            zip(
                prices.tolist(),
                counts.tolist(),
                makers.tolist(),
                firsts.tolist(),
                agg_qty.tolist(),
                book_qty.tolist(),
                strict=True,
            )
        ):
            # The aggressor consumed the touch: a sell hits the bid at p, a buy lifts the ask.
            bid, ask = (p, p + tick) if m else (p - tick, p)
            book = (a0 + i + BOOK_ID_OFFSET, bid, bq[0], ask, bq[1])
            events.append((a0 + i, f, f + c - 1, p, q_rows[i][:c], aq, m, t, book))
        return events

    def _put(self, arrays, first_id: int, n: int, values) -> None:
        cap = self.capacity
        if n > cap:  # only the newest `capacity` survive anyway
            skip = n - cap
            values = tuple(v[skip:] if isinstance(v, np.ndarray) else v for v in values)
            first_id, n = first_id + skip, cap
        start = first_id % cap
        head = min(n, cap - start)
        for arr, v in zip(arrays, values, strict=True):
            if isinstance(v, np.ndarray):
                arr[start : start + head] = v[:head]
                arr[: n - head] = v[head:]
            else:
                arr[start : start + head] = v
                arr[: n - head] = v

    # -- queries (REST) -------------------------------------------------------------------

    @property
    def first_trade_id(self) -> int:
        return max(self.start_trade_id, self.next_trade_id - self.capacity)

    @property
    def first_agg_id(self) -> int:
        return max(self.start_agg_id, self.next_agg_id - self.capacity)

    @property
    def evicted(self) -> bool:
        return self.first_trade_id > self.start_trade_id

    def trade_time(self, trade_id: int) -> int:
        return int(self.t_time[trade_id % self.capacity])

    def agg_time(self, agg_id: int) -> int:
        return self.trade_time(int(self.a_first[agg_id % self.capacity]))

    def trade_ids_from_time(self, ms: int) -> int:
        """First retained trade id with time >= ms (next_trade_id when none)."""
        ids = range(self.first_trade_id, self.next_trade_id)
        return ids.start + bisect.bisect_left(ids, ms, key=self.trade_time)

    def agg_ids_from_time(self, ms: int) -> int:
        ids = range(self.first_agg_id, self.next_agg_id)
        return ids.start + bisect.bisect_left(ids, ms, key=self.agg_time)

    def trade(self, trade_id: int) -> tuple[int, int, int, int, bool]:
        """(id, price, qty, time, buyer_is_maker) of a retained trade."""
        i = trade_id % self.capacity
        return (
            trade_id,
            int(self.t_price[i]),
            int(self.t_qty[i]),
            int(self.t_time[i]),
            bool(self.t_maker[i]),
        )

    def trades(self, lo: int, hi: int) -> list[tuple[int, int, int, int, bool]]:
        """Retained trades with lo <= id < hi."""
        lo, hi = max(lo, self.first_trade_id), min(hi, self.next_trade_id)
        return [self.trade(t) for t in range(lo, hi)]

    def aggs(self, lo: int, hi: int) -> list[tuple[int, int, int, int, int, int, bool]]:
        """Retained aggregates (a, price, qty, first, last, time, maker) with lo <= a < hi."""
        lo, hi = max(lo, self.first_agg_id), min(hi, self.next_agg_id)
        rows = []
        for a in range(lo, hi):
            i = a % self.capacity
            f = int(self.a_first[i])
            _, price, _, t, maker = self.trade(f)
            rows.append((a, price, int(self.a_qty[i]), f, f + int(self.a_count[i]) - 1, t, maker))
        return rows


class Market:
    """All simulated symbols; events are spread evenly (round robin) over the symbols."""

    def __init__(
        self, symbols: list[str], seed: int, start_trade_id: int = 1, capacity: int = 2_000_000
    ) -> None:
        if not symbols:
            raise ValueError("at least one symbol is needed")
        self.symbols = {
            s.upper(): SymbolMarket(spec_for(s), seed, start_trade_id, capacity) for s in symbols
        }
        self._order = list(self.symbols.values())
        self._rr = 0

    def get(self, symbol: str) -> SymbolMarket | None:
        return self.symbols.get(symbol.upper())

    def generate(self, n: int, now_ms: int | None = None) -> list[tuple[SymbolMarket, list]]:
        """n events in total, split round robin; returns (symbol market, events) pairs."""
        now_ms = clock.now_ms() if now_ms is None else now_ms  # tlive: shifted clock
        k = len(self._order)
        shares = [n // k + (1 if (i - self._rr) % k < n % k else 0) for i in range(k)]
        self._rr = (self._rr + n) % k
        return [(m, m.generate(c, now_ms)) for m, c in zip(self._order, shares, strict=True) if c]
