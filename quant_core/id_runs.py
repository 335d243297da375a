"""A compact set of integer ids kept as sorted runs of consecutive values.

Trade ids are contiguous per symbol, so the ids of one bar are nearly always one run: a bar's
de-duplication set costs two integers instead of one Python int per trade. The aggregator keeps
every bar's ids in this form, open or emitted, until the bar is evicted, so a trade that arrives
late (a REST repair after a reconnect) still corrects its bar instead of being dropped.
Supports what ``set`` offers the aggregator: ``in``, ``add``, ``update``, ``isdisjoint``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class IdRuns:
    __slots__ = ("hi", "lo")

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self.lo = np.empty(0, dtype=np.int64)
        self.hi = np.empty(0, dtype=np.int64)
        self.update(ids)

    def __len__(self) -> int:
        return int((self.hi - self.lo + 1).sum())

    def __contains__(self, x: int) -> bool:
        i = int(np.searchsorted(self.lo, x, side="right")) - 1
        return i >= 0 and x <= int(self.hi[i])

    def contains_many(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        i = np.searchsorted(self.lo, ids, side="right") - 1
        found = i >= 0
        found[found] = ids[found] <= self.hi[i[found]]
        return found

    def isdisjoint(self, ids: Iterable[int]) -> bool:
        values = np.fromiter(ids, dtype=np.int64)
        return not bool(self.contains_many(values).any()) if len(values) else True

    def add(self, x: int) -> None:
        self.update((x,))

    def update(self, ids: Iterable[int] | np.ndarray) -> None:
        values = (
            ids.astype(np.int64, copy=False)
            if isinstance(ids, np.ndarray)
            else np.fromiter(ids, dtype=np.int64)
        )
        n = len(values)
        if not n:
            return
        if n > 1 and not bool((values[1:] > values[:-1]).all()):
            values = np.unique(values)  # the aggregator passes a bar's ids sorted: no sort
            n = len(values)
        # The new ids as runs: a run starts where a value is not its predecessor plus one.
        breaks = np.flatnonzero(values[1:] != values[:-1] + 1) + 1
        new_lo = values[np.concatenate(([0], breaks))]
        new_hi = values[np.concatenate((breaks - 1, [n - 1]))]
        if not len(self.lo):
            self.lo, self.hi = new_lo, new_hi
            return
        top = int(self.hi[-1])
        if int(new_lo[0]) > top:  # past every run held (a bar's next trades): append
            if int(new_lo[0]) == top + 1:
                self.hi[-1] = new_hi[0]  # lo and hi are this object's own arrays
                new_lo, new_hi = new_lo[1:], new_hi[1:]
            if len(new_lo):
                self.lo = np.concatenate([self.lo, new_lo])
                self.hi = np.concatenate([self.hi, new_hi])
            return
        lo = np.concatenate([self.lo, new_lo])
        hi = np.concatenate([self.hi, new_hi])
        order = np.argsort(lo, kind="stable")
        lo, hi = lo[order], hi[order]
        # A run starts where its low is past every earlier high by more than one.
        reach = np.maximum.accumulate(hi)
        starts = np.concatenate(([True], lo[1:] > reach[:-1] + 1))
        first = np.flatnonzero(starts)
        self.lo = lo[first]
        self.hi = np.maximum.reduceat(hi, first)
