"""Trade-id continuity per (symbol, stream): duplicates, gaps and their repair.

Binance trade ids (``t``) and aggregate ids (``a``) are contiguous per symbol, so a jump means
frames were lost (reconnect, drop, restart) and a repeated id means a duplicate (overlapping
connections, re-delivery). Missing ids are kept as intervals, so a gap of a million trades costs
two integers; a repaired or late trade fills its interval.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from quant_core.decode import STREAM_NAMES, TradeColumns


@dataclass
class Gap:
    symbol: str
    stream: str
    first_id: int
    last_id: int
    # Exchange time of the last trade before the gap: bars from this minute on must wait.
    hold_ts_ms: int

    @property
    def size(self) -> int:
        return self.last_id - self.first_id + 1


@dataclass
class _Series:
    next_id: int | None = None
    last_ts_ms: int = 0
    missing: list[list[int]] = field(default_factory=list)  # sorted [first, last] intervals
    holds: list[int] = field(default_factory=list)  # hold_ts per interval, same order


class GapTracker:
    """``observe`` returns "new", "dup" or a :class:`Gap` (the event itself is new)."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], _Series] = {}
        self.duplicates = 0
        self.gaps_opened = 0
        self.ids_repaired = 0
        self.ids_absent = 0  # missing ids the exchange's REST history does not have either

    def seed(self, symbol: str, stream: str, last_id: int, last_ts_ms: int = 0) -> None:
        """Resume after a restart: ids up to ``last_id`` are already stored."""
        series = self._series.setdefault((symbol, stream), _Series())
        series.next_id = last_id + 1
        series.last_ts_ms = last_ts_ms

    def observe(self, symbol: str, stream: str, trade_id: int, ts_ms: int) -> str | Gap:
        series = self._series.setdefault((symbol, stream), _Series())
        if series.next_id is None or trade_id == series.next_id:
            series.next_id = trade_id + 1
            series.last_ts_ms = max(series.last_ts_ms, ts_ms)
            return "new"
        if trade_id > series.next_id:
            gap = Gap(symbol, stream, series.next_id, trade_id - 1, series.last_ts_ms)
            series.missing.append([gap.first_id, gap.last_id])
            series.holds.append(gap.hold_ts_ms)
            series.next_id = trade_id + 1
            series.last_ts_ms = max(series.last_ts_ms, ts_ms)
            self.gaps_opened += 1
            return gap
        if self._fill(series, trade_id):
            self.ids_repaired += 1
            return "new"
        self.duplicates += 1
        return "dup"

    def observe_many(
        self, symbol: str, stream: str, ids: np.ndarray, ts_ms: np.ndarray
    ) -> tuple[np.ndarray | None, list[Gap]]:
        """``observe`` for one series' trades in arrival order: (mask of the new ones, or None
        when all are; the gaps they opened). Contiguous ids, the normal case, cost O(1) Python."""
        series = self._series.setdefault((symbol, stream), _Series())
        n = len(ids)
        if (
            n
            and (series.next_id is None or ids[0] == series.next_id)
            and (n == 1 or bool((np.diff(ids) == 1).all()))
        ):
            series.next_id = int(ids[-1]) + 1
            series.last_ts_ms = max(series.last_ts_ms, int(ts_ms.max()))
            return None, []
        if n and series.next_id is not None:
            keep = self._contiguous(series, ids, ts_ms)
            if keep is not None:
                return keep, []
        keep = np.ones(n, dtype=bool)
        gaps: list[Gap] = []
        for i, (trade_id, ts) in enumerate(zip(ids.tolist(), ts_ms.tolist(), strict=True)):
            seen = self.observe(symbol, stream, trade_id, ts)
            if seen == "dup":
                keep[i] = False
            elif isinstance(seen, Gap):
                gaps.append(seen)
        return keep, gaps

    def observe_columns(
        self, trades: TradeColumns, symbols: Sequence[str]
    ) -> tuple[np.ndarray, list[Gap]]:
        """``observe_many`` for each (symbol, stream) series of a burst of decoded trades
        (``symbols[code]``): (mask of the trades not seen before, the gaps they opened)."""
        series = (trades.code.astype(np.int64) << 8) | trades.kind
        keep = np.ones(len(trades), dtype=bool)
        if self._all_contiguous(series, trades, symbols):
            return keep, []
        opened: list[Gap] = []
        for value in np.unique(series).tolist():
            rows = np.flatnonzero(series == value)
            mask, found = self.observe_many(
                symbols[value >> 8],
                STREAM_NAMES[value & 0xFF],
                trades.trade_id[rows],
                trades.ts[rows],
            )
            if mask is not None:
                keep[rows[~mask]] = False
            opened.extend(found)
        return keep, opened

    def _all_contiguous(
        self, series: np.ndarray, trades: TradeColumns, symbols: Sequence[str]
    ) -> bool:
        """The common burst, in a few array operations for all series at once: every series'
        ids continue it one by one (what ``observe_many`` takes in O(1) each). Applied and True
        only then; False changes nothing."""
        n = len(series)
        if not n:
            return True
        order = np.argsort(series, kind="stable")  # arrival order within each series
        s, ids = series[order], trades.trade_id[order]
        same = s[1:] == s[:-1]
        if not bool(((ids[1:] == ids[:-1] + 1) | ~same).all()):
            return False
        firsts = np.concatenate(([0], np.flatnonzero(~same) + 1))
        heads = []
        for value, first_id in zip(s[firsts].tolist(), ids[firsts].tolist(), strict=True):
            key = (symbols[value >> 8], STREAM_NAMES[value & 0xFF])
            known = self._series.get(key)
            if known is not None and known.next_id is not None and known.next_id != first_id:
                return False
            heads.append(key)
        lasts = np.concatenate((firsts[1:] - 1, [n - 1]))
        top_ts = np.maximum.reduceat(trades.ts[order], firsts).tolist()
        for key, last_id, ts in zip(heads, ids[lasts].tolist(), top_ts, strict=True):
            known = self._series.setdefault(key, _Series())
            known.next_id = last_id + 1
            known.last_ts_ms = max(known.last_ts_ms, ts)
        return True

    def _contiguous(self, series: _Series, ids: np.ndarray, ts_ms: np.ndarray):
        """A run of consecutive ids (a REST page) that opens no gap, in O(intervals): the ids
        inside missing intervals fill them, those past ``next_id`` extend the series, the rest
        are duplicates; the same as ``observe`` one by one. None when it does not apply."""
        first, last, n = int(ids[0]), int(ids[-1]), len(ids)
        if last - first + 1 != n or first > series.next_id:
            return None
        if n > 1 and not bool((np.diff(ids) == 1).all()):
            return None
        keep = np.zeros(n, dtype=bool)
        tail = series.next_id - first  # rows from here on are past what was seen
        if tail < n:
            keep[tail:] = True
            series.last_ts_ms = max(series.last_ts_ms, int(ts_ms[tail:].max()))
            series.next_id = last + 1
        top = min(last, first + tail - 1)  # the repaired part of the page ends here
        index = max(bisect_right(series.missing, [first, float("inf")]) - 1, 0)
        filled = 0
        while index < len(series.missing) and series.missing[index][0] <= top:
            lo, hi = series.missing[index]
            if hi < first:
                index += 1
                continue
            a, b = max(lo, first), min(hi, top)
            keep[a - first : b - first + 1] = True
            filled += b - a + 1
            pieces = [p for p in ([lo, a - 1], [b + 1, hi]) if p[0] <= p[1]]
            hold = series.holds[index]
            series.missing[index : index + 1] = pieces
            series.holds[index : index + 1] = [hold] * len(pieces)
            index += len(pieces)
        self.ids_repaired += filled
        self.duplicates += n - filled - max(n - tail, 0)
        return keep

    @staticmethod
    def _fill(series: _Series, trade_id: int) -> bool:
        index = bisect_right(series.missing, [trade_id, float("inf")]) - 1
        if index < 0:
            return False
        first, last = series.missing[index]
        if not first <= trade_id <= last:
            return False
        pieces = [p for p in ([first, trade_id - 1], [trade_id + 1, last]) if p[0] <= p[1]]
        hold = series.holds[index]
        series.missing[index : index + 1] = pieces
        series.holds[index : index + 1] = [hold] * len(pieces)
        return True

    def absent(self, symbol: str, stream: str, first: int, last: int) -> int:
        """Ids first..last are not in the exchange's history (a REST page asked from ``first``
        began after ``last``): no repair can bring them, so they stop holding bars. Returns how
        many of them were missing."""
        series = self._series.get((symbol, stream))
        if series is None or not series.missing:
            return 0
        kept: list[list[int]] = []
        holds: list[int] = []
        gone = 0
        for (lo, hi), hold in zip(series.missing, series.holds, strict=True):
            a, b = max(lo, first), min(hi, last)
            if a > b:
                kept.append([lo, hi])
                holds.append(hold)
                continue
            gone += b - a + 1
            for piece in ([lo, a - 1], [b + 1, hi]):
                if piece[0] <= piece[1]:
                    kept.append(piece)
                    holds.append(hold)
        series.missing, series.holds = kept, holds
        self.ids_absent += gone
        return gone

    def open_gaps(self) -> list[Gap]:
        return [
            Gap(symbol, stream, first, last, hold)
            for (symbol, stream), series in self._series.items()
            for (first, last), hold in zip(series.missing, series.holds, strict=True)
        ]

    def hold_ms(self) -> int | None:
        """The earliest exchange time that an open gap keeps from becoming final, if any."""
        holds = [h for s in self._series.values() for h in s.holds]
        return min(holds) if holds else None

    def last_ids(self) -> dict[tuple[str, str], int]:
        return {k: s.next_id - 1 for k, s in self._series.items() if s.next_id is not None}
