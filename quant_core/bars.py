"""1-minute bars with Binance's 1m kline semantics, streaming (live) and batch (replay, backfill).

Both implementations define a bar identically, and tests hold them to identical output:

* the bar of a trade is the minute of its exchange time: ``open_time = T // 60000 * 60000``,
  ``close_time = open_time + 59_999``;
* open/close are the prices of the first/last trade in exchange trade-id order (``first_trade_id``:
  the ``f`` of an aggTrade, the ``t`` of a trade), not in arrival order;
* ``volume`` sums qty; ``quote_volume`` sums price x qty exactly (Python ints / Int128) and
  rounds half-even to 8 places once, at the end; ``taker_buy_*`` do the same over taker buys
  (``is_buyer_maker`` false); ``trade_count`` sums ``last - first + 1`` (1 for a plain trade);
* ``vwap`` is the exact sum of price x qty over volume, rounded half-even to 8 places. Dividing
  the exact sum (not the rounded quote volume) keeps ``low <= vwap <= high``, which a rounded
  numerator can break on a bar of a few satoshis of volume;
* a duplicate is a second trade with the same ``first_trade_id`` in the same symbol and minute;
  the first to arrive (first row, in batch) wins. Binance gives a trade one time, so every
  duplicate it sends (reconnect replays, REST gap-repair overlaps) is caught. Feed a symbol one
  trade stream (aggTrade or trade): the two id ranges only dedupe when they start alike.

Prices and sizes are integers scaled by 10**8 (``quant_core.decode.PRICE_SCALE``).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quant_core.decode import PRICE_SCALE, BookTickerEvent, TradeEvent
from quant_core.id_runs import IdRuns
from quant_core.native.frames_dot import group_dot
from quant_core.tables import BARS_1M, PRICE, TS, decimal_from_scaled

# ttime (#14 test time): polars is imported where the batch functions run, not here, so
# `quant live` (which only streams) starts without it (about 0.4 s of CPU per process).
if TYPE_CHECKING:
    import polars as pl

INTERVAL = "1m"
INTERVAL_MS = 60_000
CLOSE_OFFSET_MS = INTERVAL_MS - 1
DAY_MS = 86_400_000
# How long an emitted bar is kept for corrections: a day, so a trade repaired late in a session
# still corrects its bar. Emitted bars keep their ids as runs (``IdRuns``), a few integers each.
RETAIN_MS = DAY_MS
BARS_1M_VERSIONED = BARS_1M.append(pa.field("version", pa.uint64()))
_INT64_MAX = 2**63 - 1
_ZERO = np.zeros(1, dtype=np.int64)  # the symbol code of a one-row call (``add_trade``)


def _one(value: int | bool, dtype: type = np.int64) -> np.ndarray:
    return np.array((value,), dtype=dtype)


def div_half_even(num: int, den: int) -> int:
    """``num / den`` rounded half to even, in integers (num >= 0, den > 0)."""
    quot, rem = divmod(num, den)
    twice = 2 * rem
    if twice > den or (twice == den and quot & 1):
        return quot + 1
    return quot


@dataclass(frozen=True, slots=True)
class BarRecord:
    """One emitted bar. Prices and sizes scaled by 10**8; ``vwap`` is None for mid bars.

    ``version`` is 1 on first emission and grows by one for every correction a late trade
    causes; consumers keep the highest version of (source, symbol, open_time_ms).
    """

    source: str
    symbol: str
    interval: str
    open_time_ms: int
    close_time_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    vwap: int | None
    trade_count: int
    taker_buy_volume: int
    taker_buy_quote_volume: int
    first_trade_id: int
    last_trade_id: int
    version: int


class _Bar:
    """Running state of one symbol-minute. ``seen`` holds the first trade ids for de-duplication:
    a set while the bar is open, compacted to runs of ids (``IdRuns``) once it is emitted."""

    __slots__ = (
        "close",
        "close_key",
        "count",
        "high",
        "last_id",
        "low",
        "open",
        "open_key",
        "pq",
        "seen",
        "start",
        "symbol",
        "tb_pq",
        "tb_volume",
        "version",
        "volume",
    )

    def __init__(self, symbol: str, start: int, key: int, price: int) -> None:
        self.symbol = symbol
        self.start = start
        self.open_key = self.close_key = key
        self.open = self.close = self.high = self.low = price
        self.volume = self.pq = self.count = self.tb_volume = self.tb_pq = 0
        self.last_id = key
        # Its trade ids, as runs: contiguous per symbol, so a bar's ids are nearly always one
        # run (a set of ints cost more to fill, and to compact when the bar was emitted).
        self.seen = IdRuns()
        self.version = 0  # emissions so far; 0 = still open

    def record(self, source: str) -> BarRecord:
        return BarRecord(
            source=source,
            symbol=self.symbol,
            interval=INTERVAL,
            open_time_ms=self.start,
            close_time_ms=self.start + CLOSE_OFFSET_MS,
            open=self.open,
            high=self.high,
            low=self.low,
            close=self.close,
            volume=self.volume,
            quote_volume=div_half_even(self.pq, PRICE_SCALE),
            vwap=div_half_even(self.pq, self.volume) if self.volume else None,
            trade_count=self.count,
            taker_buy_volume=self.tb_volume,
            taker_buy_quote_volume=div_half_even(self.tb_pq, PRICE_SCALE),
            first_trade_id=self.open_key,
            last_trade_id=self.last_id,
            version=self.version,
        )


class StreamingBarAggregator:
    """Live 1m bars, final once the exchange-time watermark has passed them by ``lateness_ms``.

    The watermark is the largest exchange time seen (``ts_event_ms`` of trades, the time given
    with book tickers) or passed to ``advance``; it is shared by all symbols, as the exchange
    clock is, so a quiet symbol's bar closes on time instead of waiting for its next trade.
    A bar is final when ``watermark > close_time + lateness_ms``; it is then emitted (version 1).

    A trade for a bar already emitted re-emits the whole corrected bar with ``version + 1``.
    Emitted bars are kept ``retain_ms`` (default a day, ``RETAIN_MS``) past finality for that
    purpose, in compact form, then evicted; a trade arriving later still cannot be applied and
    is counted in ``dropped_late`` (never applied silently, never crashing). ``duplicates``
    counts dropped duplicate trade ids.

    ``heartbeat(exchange_now_ms)`` moves the watermark to the exchange's clock minus the
    lateness: the live job calls it on its timer and records the call in the session log
    (a ``clock`` connection record), and replay calls it for that record, so the two agree.

    Mode ``"mid"`` builds bars of the mid price ``(bid + ask) / 2`` (rounded half-even to 8
    places) from book tickers: open/high/low/close of the mid in update-id order, volume 0,
    ``trade_count`` = number of updates, ``vwap`` None, first/last_trade_id = update ids. Spot
    book tickers carry no exchange time, so ``add_book_ticker`` takes the caller's ``ts_ms``
    (the receive time) when the event has none; the watermark then runs on that clock. Give mid
    bars their own ``source`` (e.g. ``"binance_mid"``) so they never mix with trade bars.
    """

    def __init__(
        self,
        lateness_ms: int = 2000,
        source: str = "binance",
        mode: Literal["trades", "mid"] = "trades",
        retain_ms: int = RETAIN_MS,
    ) -> None:
        if mode not in ("trades", "mid"):
            raise ValueError(f"mode={mode!r} must be 'trades' or 'mid'")
        if lateness_ms < 0 or retain_ms < 0:
            raise ValueError(f"lateness_ms={lateness_ms} and retain_ms={retain_ms} must be >= 0")
        self.lateness_ms = lateness_ms
        self.source = source
        self.mode = mode
        self.retain_ms = retain_ms
        self.watermark_ms: int | None = None
        self.dropped_late = 0
        self.duplicates = 0
        self._bars: dict[str, dict[int, _Bar]] = {}
        # Open bars by minute (emitted at finality) and emitted ones (evicted after retain_ms);
        # the heaps hold each minute once, so the per-trade cost stays O(1) amortised.
        self._pending: dict[int, list[_Bar]] = {}
        self._pending_heap: list[int] = []
        self._retained: dict[int, list[_Bar]] = {}
        self._retained_heap: list[int] = []
        self._final_after = CLOSE_OFFSET_MS + lateness_ms  # final when start + this < watermark
        self._evict_after = self._final_after + retain_ms
        self._due: float = float("inf")  # smallest watermark at which _settle has work
        # Exchange time an open trade-id gap keeps from finality (see ``hold``).
        self.hold_ms: int | None = None

    # -- input -----------------------------------------------------------------------------

    def add_trade(self, ev: TradeEvent) -> list[BarRecord]:
        """Apply one trade; returns bars that became final and corrections it caused. A thin
        call into ``add_trades`` (the one aggregation implementation) with one row."""
        return self.add_trades(
            (ev.symbol,), _ZERO, _one(ev.first_trade_id), _one(ev.last_trade_id),
            _one(ev.price), _one(ev.qty), _one(ev.ts_event_ms), _one(not ev.is_buyer_maker, bool),
        )  # fmt: skip

    def add_trades(
        self,
        symbols: Sequence[str],
        code: np.ndarray,
        key: np.ndarray,
        last: np.ndarray,
        price: np.ndarray,
        qty: np.ndarray,
        ts: np.ndarray,
        taker_buy: np.ndarray,
    ) -> list[BarRecord]:
        """Many trades at once, as columns in arrival order (``symbols[code]``, first/last
        trade id, scaled price/qty, exchange ms, taker buy): the same state as ``add_trade``
        one by one; see "Many trades at once" below."""
        if self.mode != "trades":
            raise ValueError("add_trades on a mode='mid' aggregator: route trades elsewhere")
        return self._add_columns(symbols, code, key, last, price, qty, ts, taker_buy)

    def add_book_tickers(
        self,
        symbols: Sequence[str],
        code: np.ndarray,
        update_id: np.ndarray,
        bid: np.ndarray,
        ask: np.ndarray,
        ts: np.ndarray,
    ) -> list[BarRecord]:
        """``add_book_ticker`` for many updates (mode "mid"), ``ts`` the time of each."""
        if self.mode != "mid":
            raise ValueError("add_book_tickers on a mode='trades' aggregator: use mode='mid'")
        total = bid + ask
        half = total >> 1
        mid = half + (total & half & 1)  # half to even, as div_half_even(bid + ask, 2)
        none = np.zeros(len(ts), dtype=np.int64)
        return self._add_columns(
            symbols, code, update_id, update_id, mid, none, ts, none.astype(bool)
        )

    def add_book_ticker(self, ev: BookTickerEvent, ts_ms: int | None = None) -> list[BarRecord]:
        """Apply one book ticker (mode "mid") at its event time, else at ``ts_ms``."""
        if self.mode != "mid":
            raise ValueError("add_book_ticker on a mode='trades' aggregator: use mode='mid'")
        ts = ev.ts_event_ms if ev.ts_event_ms is not None else ts_ms
        if ts is None:
            raise ValueError(
                f"book ticker update_id={ev.update_id} of {ev.symbol} has no event time: "
                "pass ts_ms (the receive time)"
            )
        return self.add_book_tickers(
            (ev.symbol,),
            _ZERO,
            _one(ev.update_id),
            _one(ev.bid_price),
            _one(ev.ask_price),
            _one(ts),
        )

    def advance(self, watermark_ms: int) -> list[BarRecord]:
        """Move the exchange-time watermark (e.g. from a heartbeat); returns bars now final."""
        if self.watermark_ms is None or watermark_ms > self.watermark_ms:
            self.watermark_ms = watermark_ms
            if watermark_ms > self._due:
                return self._settle()
        return []

    def heartbeat(self, exchange_now_ms: int) -> list[BarRecord]:
        """The exchange clock reads ``exchange_now_ms``: trades up to ``lateness_ms`` before it
        are taken to have arrived, so the watermark moves there (recorded ``clock`` records)."""
        return self.advance(exchange_now_ms - self.lateness_ms)

    def hold(self, hold_ms: int | None) -> list[BarRecord]:
        """Keep the minute containing ``hold_ms`` and later ones from becoming final (a gap
        in the trade ids is being repaired there); ``None`` releases and settles what is due."""
        self.hold_ms = hold_ms
        self._recompute_due()  # held bars are not due: see _recompute_due
        if hold_ms is None and self.watermark_ms is not None and self.watermark_ms > self._due:
            return self._settle()
        return []

    def flush(self, now_exchange_ms: int) -> list[BarRecord]:
        """Clean stop: emit every bar whose minute has ended (``close_time < now``), whatever
        the lateness, and never the minute still running. Later trades for them re-version."""
        out: list[BarRecord] = []
        heap = self._pending_heap
        while heap and heap[0] + CLOSE_OFFSET_MS < now_exchange_ms:
            out.extend(self._emit(heapq.heappop(heap)))
        self._recompute_due()
        return out

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _track(by_start: dict[int, list[_Bar]], heap: list[int], bar: _Bar) -> None:
        group = by_start.get(bar.start)
        if group is None:
            by_start[bar.start] = [bar]
            heapq.heappush(heap, bar.start)
        else:
            group.append(bar)

    def _retain(self, bar: _Bar) -> None:
        """An emitted bar: kept for corrections (its ids are runs already)."""
        self._track(self._retained, self._retained_heap, bar)

    def _emit(self, start: int) -> list[BarRecord]:
        out = []
        for bar in sorted(self._pending.pop(start, ()), key=lambda b: b.symbol):
            bar.version = 1
            out.append(bar.record(self.source))
            self._retain(bar)
        return out

    def _settle(self) -> list[BarRecord]:
        wm = self.watermark_ms
        assert wm is not None
        out: list[BarRecord] = []
        heap = self._pending_heap
        hold = self.hold_ms
        while heap and heap[0] + self._final_after < wm:
            if hold is not None and heap[0] + INTERVAL_MS > hold:
                break  # its trades are still being repaired
            out.extend(self._emit(heapq.heappop(heap)))
        heap = self._retained_heap
        while heap and heap[0] + self._evict_after < wm:
            for bar in self._retained.pop(heapq.heappop(heap)):
                bars = self._bars[bar.symbol]
                del bars[bar.start]
                if not bars:
                    del self._bars[bar.symbol]
        self._recompute_due()
        return out

    def _held(self, start: int) -> bool:
        """Is the minute starting at ``start`` kept from finality by ``hold_ms``?"""
        return self.hold_ms is not None and start + INTERVAL_MS > self.hold_ms

    def _recompute_due(self) -> None:
        # A held bar (and every later one: the heap's first is the earliest) is not due: while
        # a gap is open, counting it would make every trade that moves the watermark run
        # _settle for nothing, and cut ``add_trades`` into one-row segments (~1,000x slower;
        # the live job then fell behind whenever a repair was running). ``hold`` recomputes.
        due = float("inf")
        if self._pending_heap and not self._held(self._pending_heap[0]):
            due = self._pending_heap[0] + self._final_after
        if self._retained_heap:
            due = min(due, self._retained_heap[0] + self._evict_after)
        self._due = due

    # -- many trades at once (see the comment after this class) --

    def _add_columns(
        self,
        symbols: Sequence[str],
        code: np.ndarray,
        key: np.ndarray,
        last: np.ndarray,
        price: np.ndarray,
        qty: np.ndarray,
        ts: np.ndarray,
        taker_buy: np.ndarray,
    ) -> list[BarRecord]:
        """Trades in arrival order: ``symbols[code]``, ``key`` = first trade id, ``last`` = last
        trade id, scaled ``price``/``qty``, exchange ``ts`` (ms), ``taker_buy`` (not buyer
        maker)."""
        n = len(ts)
        if n == 0:
            return []
        code = np.asarray(code, dtype=np.int64)
        start = ts - ts % INTERVAL_MS
        group = (code << 32) | (start // INTERVAL_MS)
        dup = self._duplicates(symbols, group, key)
        wm0 = _NONE if self.watermark_ms is None else self.watermark_ms
        running = np.maximum.accumulate(np.where(dup, _NONE, ts))
        wm_before = np.empty(n, dtype=np.int64)
        wm_before[0] = wm0
        np.maximum(running[:-1], wm0, out=wm_before[1:])
        dropped = (wm_before != _NONE) & (start + self._evict_after < wm_before)
        dup &= ~dropped
        live = ~(dup | dropped)
        self.dropped_late += int(dropped.sum())
        self.duplicates += int(dup.sum())

        out: list[BarRecord] = []
        pos = 0
        while pos < n:
            end, settle = self._segment_end(symbols, group, start, ts, wm_before, live, pos)
            rows = np.flatnonzero(live[pos : end + 1]) + pos
            if len(rows):
                columns = (group, start, key, last, price, qty, taker_buy, wm_before)
                self._apply(symbols, columns, rows, out)
                top = int(ts[rows].max())
                if self.watermark_ms is None or top > self.watermark_ms:
                    self.watermark_ms = top
            if settle:
                out.extend(self._settle())
            pos = end + 1
        return out

    def _bar_of(self, symbols: Sequence[str], g: int) -> _Bar | None:
        bars = self._bars.get(symbols[g >> 32])
        return None if bars is None else bars.get((g & 0xFFFFFFFF) * INTERVAL_MS)

    def _duplicates(self, symbols, group: np.ndarray, key: np.ndarray) -> np.ndarray:
        """A row whose (symbol-minute, first trade id) came before: earlier in the call, or in a
        bar the aggregator holds. The first arrival wins, as in ``add_trade``."""
        n = len(group)
        order = np.lexsort((key, group))  # stable: equal rows keep their arrival order
        g, k = group[order], key[order]
        dup = np.zeros(n, dtype=bool)
        dup[order[1:]] = (g[1:] == g[:-1]) & (k[1:] == k[:-1])
        if self._bars:
            bounds = np.flatnonzero(g[1:] != g[:-1]) + 1
            for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), n], strict=True):
                bar = self._bar_of(symbols, int(g[lo]))
                if bar is None:
                    continue
                dup[order[lo:hi]] |= bar.seen.contains_many(k[lo:hi])
        return dup

    def _creates_final(self, start: int, wm_before: int) -> bool:
        """Would the first trade of a bar not yet held create it final (``add_trade``'s rule)?"""
        hold = self.hold_ms
        return (
            wm_before != _NONE
            and start + self._final_after < wm_before
            and (hold is None or start + INTERVAL_MS <= hold)
        )

    def _segment_end(
        self, symbols, group, start, ts, wm_before, live, pos: int
    ) -> tuple[int, bool]:
        """Last row of the segment starting at ``pos`` and whether ``_settle`` runs after it: the
        first live row that moves the watermark past ``_due``, as lowered by the pending bars the
        rows before it (and itself) open."""
        rows = np.flatnonzero(live[pos:]) + pos
        if not len(rows):
            return len(ts) - 1, False
        firsts = np.unique(group[rows], return_index=True)
        due = np.full(len(rows), _NEVER, dtype=np.int64)
        for g, at in zip(firsts[0].tolist(), firsts[1].tolist(), strict=True):
            j = int(rows[at])
            if (
                self._bar_of(symbols, g) is None
                and not self._held(int(start[j]))
                and not self._creates_final(int(start[j]), int(wm_before[j]))
            ):
                due[at] = int(start[j]) + self._final_after
        due0 = _NEVER if self._due == float("inf") else int(self._due)
        due = np.minimum(np.minimum.accumulate(due), due0)
        hit = np.flatnonzero((ts[rows] > wm_before[rows]) & (ts[rows] > due))
        if not len(hit):
            return len(ts) - 1, False
        return int(rows[hit[0]]), True

    def _apply(self, symbols, columns, rows, out) -> None:
        """One segment's live rows (nothing settles inside it): one update per symbol-minute."""
        group, start, key, last, price, qty, taker_buy, wm_before = columns
        o = rows[np.lexsort((key[rows], group[rows]))]  # by bar, then trade id (unique per bar)
        g = group[o]
        # np.r_ costs ~10 us a call: concatenate instead (this runs once per burst and segment).
        ends = np.concatenate((np.flatnonzero(g[1:] != g[:-1]) + 1, [len(o)]))
        firsts = np.concatenate(([0], ends[:-1]))
        lasts = ends - 1
        k, p, q, lst = key[o], price[o], qty[o], last[o]
        tq = np.where(taker_buy[o], q, 0)
        per_bar = (
            g[firsts],
            np.minimum.reduceat(o, firsts),  # first arrival: creates the bar
            k[firsts],
            p[firsts],
            k[lasts],
            p[lasts],
            np.maximum.reduceat(p, firsts),
            np.minimum.reduceat(p, firsts),
            np.add.reduceat(q, firsts),
            np.add.reduceat(lst - k + 1, firsts),
            np.maximum.reduceat(lst, firsts),
            np.add.reduceat(tq, firsts),
            ends - firsts,
        )
        pq = exact_dot(p, q, firsts)
        tb_pq = exact_dot(p, tq, firsts)
        bounds = [0, *ends.tolist()]
        source = self.source
        for i, (gk, j0, kmin, pmin, kmax, pmax, hi, lo, vol, count, last_id, tbv, m) in enumerate(
            zip(*(c.tolist() for c in per_bar), strict=True)
        ):
            bar = self._bar_of(symbols, gk)
            if bar is None:
                bar_start = int(start[j0])
                bar = _Bar(symbols[gk >> 32], bar_start, int(key[j0]), int(price[j0]))
                self._bars.setdefault(bar.symbol, {})[bar_start] = bar
                if self._creates_final(bar_start, int(wm_before[j0])):
                    bar.version = -1
                else:
                    self._track(self._pending, self._pending_heap, bar)
                    if not self._held(bar_start) and bar_start + self._final_after < self._due:
                        self._due = bar_start + self._final_after
            if kmin < bar.open_key:
                bar.open_key, bar.open = kmin, pmin
            if kmax > bar.close_key:
                bar.close_key, bar.close = kmax, pmax
            bar.high = max(bar.high, hi)
            bar.low = min(bar.low, lo)
            bar.seen.update(k[bounds[i] : bounds[i + 1]])  # sorted: by bar, then id
            bar.volume += vol
            bar.pq += pq[i]
            bar.count += count
            bar.last_id = max(bar.last_id, last_id)
            bar.tb_volume += tbv
            bar.tb_pq += tb_pq[i]
            if bar.version:
                if bar.version < 0:
                    bar.version = 0
                    self._retain(bar)
                bar.version += m
                out.append(bar.record(source))

    def open_bars(self) -> int:
        """Bars held in memory (open or retained for corrections)."""
        return sum(len(b) for b in self._bars.values())


# -- Many trades at once (``add_trades``) -----------------------------------------------------
# Many trades at once into a ``StreamingBarAggregator``, with numpy: its ``add_trades``.
#
# The result is what feeding the same trades one at a time gives (``add_trade`` is a call with
# one row) - the same bars, versions, ``duplicates`` and ``dropped_late`` (tests hold the two to
# that) - except that
# a bar corrected several times within one call is emitted once, at its last version, instead of
# once per trade: consumers keep the highest version anyway.
#
# Why it is exact: the per-trade path changes its state in only two ways that depend on order.
# The watermark is the running maximum of exchange times, a prefix maximum here. Bars become
# final only in ``_settle``, which runs when a trade moves the watermark past ``_due``; the rows
# are cut into segments at those trades (``_due`` itself falls when a row opens a new pending
# bar, so it is a prefix minimum too). Inside a segment nothing settles, so each symbol-minute's
# rows reduce to one update: open/close at the lowest/highest trade id, high/low, sums (price x
# qty exactly, in 128-bit C sums), and one version step per row for bars already emitted.

_NONE = np.iinfo(np.int64).min  # "no watermark yet"
_NEVER = np.iinfo(np.int64).max


def exact_dot(a: np.ndarray, b: np.ndarray, firsts: np.ndarray) -> list[int]:
    """Per-group sums of a x b for int64 a, b, exactly (products reach 2**126), in C
    (``quant_core/native/frames_dot.c``: 128-bit sums, carried into Python ints when they
    would overflow). ``firsts``: each group's first row, rising from 0."""
    return group_dot(
        np.ascontiguousarray(a, dtype=np.int64),
        np.ascontiguousarray(b, dtype=np.int64),
        np.ascontiguousarray(firsts, dtype=np.int64),
    )


# -- Arrow -------------------------------------------------------------------------------------


def _decimal_column(values: list[int | None]) -> pa.Array:
    if None not in values:
        return decimal_from_scaled(values, 8)
    filled = decimal_from_scaled([0 if v is None else v for v in values], 8)
    return pc.if_else(pa.array([v is None for v in values]), pa.scalar(None, PRICE), filled)


def bars_to_arrow(records: Iterable[BarRecord]) -> pa.Table:
    """Records -> a table of schema ``BARS_1M`` plus ``version`` (uint64), in the given order.

    Values must fit int64 once scaled by 10**8 (the warehouse's decimal(38, 8) is built from
    int64); an overflow raises rather than wraps.
    """
    rows = list(records)
    open_ms = np.array([r.open_time_ms for r in rows], dtype=np.int64)
    return _bars_table(
        source=pa.array([r.source for r in rows], pa.string()),
        symbol=pa.array([r.symbol for r in rows], pa.string()),
        interval=pa.array([r.interval for r in rows], pa.string()),
        open_ms=open_ms,
        close_ms=np.array([r.close_time_ms for r in rows], dtype=np.int64),
        decimals={
            name: _decimal_column([getattr(r, name) for r in rows])
            for name in (
                "open",
                "high",
                "low",
                "close",
                "volume",
                "quote_volume",
                "vwap",
                "taker_buy_volume",
                "taker_buy_quote_volume",
            )
        },
        trade_count=pa.array([r.trade_count for r in rows], pa.uint64()),
        version=pa.array([r.version for r in rows], pa.uint64()),
    )


def _bars_table(
    *,
    source: pa.Array,
    symbol: pa.Array,
    interval: pa.Array,
    open_ms: np.ndarray,
    close_ms: np.ndarray,
    decimals: dict[str, pa.Array],
    trade_count: pa.Array,
    version: pa.Array,
) -> pa.Table:
    n = len(open_ms)
    columns = {
        "source": source,
        "symbol": symbol,
        "interval": interval,
        "ts": pa.array(open_ms, pa.int64()).cast(TS),
        "ts_close": pa.array(close_ms, pa.int64()).cast(TS),
        "session_date": pa.array((open_ms // DAY_MS).astype(np.int32), pa.int32()).cast(
            pa.date32()
        ),
        "session": pa.array(["continuous"] * n, pa.string()),
        **decimals,
        "trade_count": trade_count,
        "adjustment": pa.array(["raw"] * n, pa.string()),
        "adj_factor": pa.array(np.ones(n), pa.float64()),
        "version": version,
    }
    return pa.table([columns[f.name] for f in BARS_1M_VERSIONED], schema=BARS_1M_VERSIONED)


# -- batch -------------------------------------------------------------------------------------


def _scaled_int64(column: pa.ChunkedArray | pa.Array, name: str) -> pa.Array:
    """A price/qty column -> int64 counts of 10**-8, exactly, or a ValueError/TypeError."""
    import polars as pl  # ttime: lazy, see the imports

    kind = column.type
    if pa.types.is_integer(kind):
        return pc.cast(column, pa.int64())  # already scaled by 10**8 (the normaliser's units)
    if pa.types.is_decimal(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        # Arrow's safe cast refuses anything that would lose a digit (more than 8 places).
        try:
            exact = pc.cast(column, PRICE)
        except pa.ArrowInvalid as exc:
            raise ValueError(f"column {name!r} is not exact at 8 decimal places: {exc}") from exc
        physical = pl.from_arrow(exact).to_physical()  # Int128 units of 10**-8
        if physical.null_count() == 0 and len(physical) and physical.abs().max() > _INT64_MAX:
            raise ValueError(f"column {name!r} has a value beyond int64 once scaled by 10**8")
        return physical.cast(pl.Int64).to_arrow()
    raise TypeError(
        f"column {name!r} has type {kind}: give decimal128, string, or int64 scaled by 10**8 "
        "(floats are refused: they are not exact)"
    )


def _epoch_ms(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    import polars as pl  # ttime: lazy, see the imports

    kind = column.type
    if not pa.types.is_timestamp(kind) or kind.tz is None:
        raise TypeError(f"column 'ts_event' has type {kind}: give a UTC (tz-aware) timestamp")
    per_ms = {"s": None, "ms": 1, "us": 1000, "ns": 1_000_000}[kind.unit]
    raw = pl.from_arrow(pc.cast(column, pa.int64()))
    # Floor, so a sub-millisecond time stays in its minute (Binance times are whole ms anyway).
    ms = raw * 1000 if per_ms is None else raw // per_ms
    return ms.to_arrow()


def half_even_expr(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """``div_half_even`` as a polars expression over Int128 columns (batch bars)."""
    import polars as pl  # ttime: lazy, see the imports

    quot = num // den
    twice = (num - quot * den) * 2
    bump = (twice > den) | ((twice == den) & (quot % 2 == 1))
    return quot + bump.cast(pl.Int128)


def aggregate_trades(trades: pa.Table) -> pa.Table:
    """Trades -> 1m bars (schema ``BARS_1M`` + ``version`` = 1), sorted by symbol, ts.

    Public and stable. Columns: ``symbol`` (string), ``trade_id`` (int), ``price`` and ``qty``
    (decimal128 of scale <= 8 or any decimal exact at 8 places, decimal strings, or int64
    already scaled by 10**8), ``ts_event`` (tz-aware timestamp, any unit), ``is_buyer_maker``
    (bool); optionally ``first_trade_id``/``last_trade_id`` (aggTrades: the ids they cover,
    used for ordering, de-duplication and trade_count; null or absent -> ``trade_id``).
    ``source`` is taken from a ``source`` column when present, else ``"binance"``.
    Raises ValueError on nulls, non-positive prices or sizes, or values not exact at 8 places.
    Sums are exact (Int128) and rounded half-even once per bar, as the streaming aggregator does.
    """
    import polars as pl  # ttime: lazy, see the imports

    i128, scale = pl.Int128, pl.lit(PRICE_SCALE, dtype=pl.Int128)
    required = ("symbol", "trade_id", "price", "qty", "ts_event", "is_buyer_maker")
    missing = [c for c in required if c not in trades.column_names]
    if missing:
        raise ValueError(f"trades lack column(s) {missing}; required: {list(required)}")
    names = trades.column_names
    trade_id = pc.cast(trades["trade_id"], pa.int64())
    first = pc.cast(trades["first_trade_id"], pa.int64()) if "first_trade_id" in names else None
    last = pc.cast(trades["last_trade_id"], pa.int64()) if "last_trade_id" in names else None
    frame = pl.DataFrame(
        {
            "source": trades["source"] if "source" in names else pa.nulls(trades.num_rows),
            "symbol": pc.utf8_upper(pc.cast(trades["symbol"], pa.string())),
            "key": pc.coalesce(first, trade_id) if first is not None else trade_id,
            "last": pc.coalesce(last, trade_id) if last is not None else trade_id,
            "price": _scaled_int64(trades["price"], "price"),
            "qty": _scaled_int64(trades["qty"], "qty"),
            "ts": _epoch_ms(trades["ts_event"]),
            "maker": pc.cast(trades["is_buyer_maker"], pa.bool_()),
        }
    ).with_columns(pl.col("source").cast(pl.String).fill_null("binance"))
    for col in ("symbol", "key", "last", "price", "qty", "ts", "maker"):
        if frame[col].null_count():
            raise ValueError(f"trades have nulls in {col!r}")
    if frame.height and (frame["price"].min() <= 0 or frame["qty"].min() <= 0):
        raise ValueError("trades have a non-positive price or qty")
    if frame.height and (frame["last"] < frame["key"]).any():
        raise ValueError("trades have last_trade_id < first_trade_id")

    pq = pl.col("price").cast(i128) * pl.col("qty").cast(i128)
    taker = ~pl.col("maker")
    bars = (
        frame.with_columns(start=pl.col("ts") - pl.col("ts") % INTERVAL_MS)
        .unique(subset=["symbol", "start", "key"], keep="first", maintain_order=True)
        .group_by("source", "symbol", "start")
        .agg(
            open=pl.col("price").get(pl.col("key").arg_min()),
            close=pl.col("price").get(pl.col("key").arg_max()),
            high=pl.col("price").max(),
            low=pl.col("price").min(),
            volume=pl.col("qty").cast(i128).sum(),
            pq=pq.sum(),
            trade_count=(pl.col("last") - pl.col("key") + 1).sum(),
            tb_volume=pl.col("qty").cast(i128).filter(taker).sum(),
            tb_pq=pq.filter(taker).sum(),
        )
        .with_columns(
            quote_volume=half_even_expr(pl.col("pq"), scale),
            vwap=half_even_expr(pl.col("pq"), pl.col("volume")),
            tb_quote=half_even_expr(pl.col("tb_pq"), scale),
        )
        .sort("symbol", "start", "source")
    )
    as_int64 = {
        name: bars[src].cast(pl.Int64, strict=True).to_numpy()
        for name, src in (
            ("open", "open"),
            ("high", "high"),
            ("low", "low"),
            ("close", "close"),
            ("volume", "volume"),
            ("quote_volume", "quote_volume"),
            ("vwap", "vwap"),
            ("taker_buy_volume", "tb_volume"),
            ("taker_buy_quote_volume", "tb_quote"),
        )
    }
    open_ms = bars["start"].to_numpy().astype(np.int64)
    return _bars_table(
        source=bars["source"].to_arrow().cast(pa.string()),
        symbol=bars["symbol"].to_arrow().cast(pa.string()),
        interval=pa.array([INTERVAL] * bars.height, pa.string()),
        open_ms=open_ms,
        close_ms=open_ms + CLOSE_OFFSET_MS,
        decimals={name: decimal_from_scaled(v, 8) for name, v in as_int64.items()},
        trade_count=pa.array(bars["trade_count"].to_numpy(), pa.int64()).cast(pa.uint64()),
        version=pa.array(np.ones(bars.height, dtype=np.uint64), pa.uint64()),
    )
