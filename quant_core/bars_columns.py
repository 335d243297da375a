"""Many trades at once into a ``StreamingBarAggregator``, with numpy: its ``add_trades``.

The result is what feeding the same trades one by one to ``add_trade`` gives - the same bars,
versions, ``duplicates`` and ``dropped_late`` (tests hold the two paths to that) - except that
a bar corrected several times within one call is emitted once, at its last version, instead of
once per trade: consumers keep the highest version anyway.

Why it is exact: the per-trade path changes its state in only two ways that depend on order.
The watermark is the running maximum of exchange times, a prefix maximum here. Bars become
final only in ``_settle``, which runs when a trade moves the watermark past ``_due``; the rows
are cut into segments at those trades (``_due`` itself falls when a row opens a new pending
bar, so it is a prefix minimum too). Inside a segment nothing settles, so each symbol-minute's
rows reduce to one update: open/close at the lowest/highest trade id, high/low, sums (price x
qty exactly, in 32-bit limbs), and one version step per row for bars already emitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from quant_core.bars import INTERVAL_MS, BarRecord, _Bar
from quant_core.id_runs import IdRuns

if TYPE_CHECKING:
    from quant_core.bars import StreamingBarAggregator

_NONE = np.iinfo(np.int64).min  # "no watermark yet"
_NEVER = np.iinfo(np.int64).max
_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


def add_trade_columns(
    agg: StreamingBarAggregator,
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
    trade id, scaled ``price``/``qty``, exchange ``ts`` (ms), ``taker_buy`` (not buyer maker)."""
    n = len(ts)
    if n == 0:
        return []
    code = np.asarray(code, dtype=np.int64)
    start = ts - ts % INTERVAL_MS
    group = (code << 32) | (start // INTERVAL_MS)
    dup = _duplicates(agg, symbols, group, key)
    wm0 = _NONE if agg.watermark_ms is None else agg.watermark_ms
    running = np.maximum.accumulate(np.where(dup, _NONE, ts))
    wm_before = np.empty(n, dtype=np.int64)
    wm_before[0] = wm0
    np.maximum(running[:-1], wm0, out=wm_before[1:])
    dropped = (wm_before != _NONE) & (start + agg._evict_after < wm_before)
    dup &= ~dropped
    live = ~(dup | dropped)
    agg.dropped_late += int(dropped.sum())
    agg.duplicates += int(dup.sum())

    out: list[BarRecord] = []
    pos = 0
    while pos < n:
        end, settle = _segment_end(agg, symbols, group, start, ts, wm_before, live, pos)
        rows = np.flatnonzero(live[pos : end + 1]) + pos
        if len(rows):
            columns = (group, start, key, last, price, qty, taker_buy, wm_before)
            _apply(agg, symbols, columns, rows, out)
            top = int(ts[rows].max())
            if agg.watermark_ms is None or top > agg.watermark_ms:
                agg.watermark_ms = top
        if settle:
            out.extend(agg._settle())
        pos = end + 1
    return out


def _bar_of(agg: StreamingBarAggregator, symbols: Sequence[str], g: int) -> _Bar | None:
    bars = agg._bars.get(symbols[g >> 32])
    return None if bars is None else bars.get((g & 0xFFFFFFFF) * INTERVAL_MS)


def _duplicates(agg, symbols, group: np.ndarray, key: np.ndarray) -> np.ndarray:
    """A row whose (symbol-minute, first trade id) came before: earlier in the call, or in a
    bar the aggregator holds. The first arrival wins, as in ``add_trade``."""
    n = len(group)
    order = np.lexsort((np.arange(n), key, group))
    g, k = group[order], key[order]
    dup = np.zeros(n, dtype=bool)
    dup[order[1:]] = (g[1:] == g[:-1]) & (k[1:] == k[:-1])
    if agg._bars:
        bounds = np.flatnonzero(g[1:] != g[:-1]) + 1
        for lo, hi in zip(np.r_[0, bounds].tolist(), np.r_[bounds, n].tolist(), strict=True):
            bar = _bar_of(agg, symbols, int(g[lo]))
            if bar is None:
                continue
            seen = bar.seen
            if isinstance(seen, IdRuns):  # an emitted bar
                dup[order[lo:hi]] |= seen.contains_many(k[lo:hi])
                continue
            keys = k[lo:hi].tolist()
            if not seen.isdisjoint(keys):
                dup[order[lo:hi]] |= np.fromiter((x in seen for x in keys), bool, hi - lo)
    return dup


def _creates_final(agg, start: int, wm_before: int) -> bool:
    """Would the first trade of a bar not yet held create it final (``add_trade``'s rule)?"""
    hold = agg.hold_ms
    return (
        wm_before != _NONE
        and start + agg._final_after < wm_before
        and (hold is None or start + INTERVAL_MS <= hold)
    )


def _segment_end(agg, symbols, group, start, ts, wm_before, live, pos: int) -> tuple[int, bool]:
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
        if _bar_of(agg, symbols, g) is None and not _creates_final(
            agg, int(start[j]), int(wm_before[j])
        ):
            due[at] = int(start[j]) + agg._final_after
    due0 = _NEVER if agg._due == float("inf") else int(agg._due)
    due = np.minimum(np.minimum.accumulate(due), due0)
    hit = np.flatnonzero((ts[rows] > wm_before[rows]) & (ts[rows] > due))
    if not len(hit):
        return len(ts) - 1, False
    return int(rows[hit[0]]), True


def _apply(agg, symbols, columns, rows, out) -> None:
    """One segment's live rows (nothing settles inside it): one update per symbol-minute."""
    group, start, key, last, price, qty, taker_buy, wm_before = columns
    o = rows[np.lexsort((key[rows], group[rows]))]  # by bar, then trade id (unique per bar)
    g = group[o]
    firsts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    lasts = np.r_[firsts[1:], len(o)] - 1
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
        np.diff(np.r_[firsts, len(o)]),
    )
    pq = _exact_dot(p, q, firsts)
    tb_pq = _exact_dot(p, tq, firsts)
    keys = k.tolist()
    bounds = np.r_[firsts, len(o)].tolist()
    source = agg.source
    for i, (gk, j0, kmin, pmin, kmax, pmax, hi, lo, vol, count, last_id, tbv, m) in enumerate(
        zip(*(c.tolist() for c in per_bar), strict=True)
    ):
        bar = _bar_of(agg, symbols, gk)
        if bar is None:
            bar_start = int(start[j0])
            bar = _Bar(symbols[gk >> 32], bar_start, int(key[j0]), int(price[j0]))
            agg._bars.setdefault(bar.symbol, {})[bar_start] = bar
            if _creates_final(agg, bar_start, int(wm_before[j0])):
                bar.version = -1
            else:
                agg._track(agg._pending, agg._pending_heap, bar)
                if bar_start + agg._final_after < agg._due:
                    agg._due = bar_start + agg._final_after
        if kmin < bar.open_key:
            bar.open_key, bar.open = kmin, pmin
        if kmax > bar.close_key:
            bar.close_key, bar.close = kmax, pmax
        bar.high = max(bar.high, hi)
        bar.low = min(bar.low, lo)
        bar.seen.update(keys[bounds[i] : bounds[i + 1]])
        bar.volume += vol
        bar.pq += pq[i]
        bar.count += count
        bar.last_id = max(bar.last_id, last_id)
        bar.tb_volume += tbv
        bar.tb_pq += tb_pq[i]
        if bar.version:
            if bar.version < 0:
                bar.version = 0
                agg._retain(bar)
            bar.version += m
            out.append(bar.record(source))


def _exact_dot(a: np.ndarray, b: np.ndarray, firsts: np.ndarray) -> list[int]:
    """Per-group sums of a x b for non-negative int64 a, b, exactly (products reach 2**126):
    each product is split into 32-bit limbs whose sums cannot overflow uint64."""
    a, b = a.astype(np.uint64), b.astype(np.uint64)
    a_hi, a_lo, b_hi, b_lo = a >> _S32, a & _M32, b >> _S32, b & _M32
    totals = [0] * len(firsts)
    for shift, x, y in ((0, a_lo, b_lo), (32, a_hi, b_lo), (32, a_lo, b_hi), (64, a_hi, b_hi)):
        prod = x * y
        low = np.add.reduceat(prod & _M32, firsts).tolist()
        high = np.add.reduceat(prod >> _S32, firsts).tolist()
        for i, (lo, hi) in enumerate(zip(low, high, strict=True)):
            totals[i] += (lo + (hi << 32)) << shift
    return totals
