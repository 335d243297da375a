"""A compact set of integer ids kept as sorted runs of consecutive values.

Trade ids are contiguous per symbol, so the ids of one bar are nearly always one run: a bar's
de-duplication set costs two integers instead of one Python int per trade. The aggregator keeps
a bar in this form from the moment it is emitted until the end of the session, so a trade that
arrives late (a REST repair after a reconnect) still corrects its bar instead of being dropped.
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

    def update(self, ids: Iterable[int]) -> None:
        values = np.unique(np.fromiter(ids, dtype=np.int64))
        if not len(values):
            return
        lo = np.concatenate([self.lo, values])
        hi = np.concatenate([self.hi, values])
        order = np.argsort(lo, kind="stable")
        lo, hi = lo[order], hi[order]
        # A run starts where its low is past every earlier high by more than one.
        reach = np.maximum.accumulate(hi)
        starts = np.r_[True, lo[1:] > reach[:-1] + 1]
        first = np.flatnonzero(starts)
        self.lo = lo[first]
        self.hi = np.maximum.reduceat(hi, first)
