"""A seeded order book per symbol that changes like Binance's and speaks its depth wire forms:
``depthUpdate`` diff frames (``<symbol>@depth@100ms``) and ``/api/v3/depth`` answers.

Every change is to a price strictly inside the other side's best (bids below the best ask, asks
above the best bid), so the book is never crossed; removals take the best level now and then
(a trade consumed it), which walks the spread and the mid. Update ids count individual
changes, as Binance's do: a diff covers ``U..u`` with ``u - U + 1`` at least its level count.
The same seed gives the same diffs, whatever calls them: tests and benchmarks use it as
ground truth (its book is what a client that followed every diff must hold).
"""

from __future__ import annotations

import heapq
import random

import orjson

from quant_dev.binance_sim.market import SCALE, fmt8

DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000, 5000)


class DepthMarket:
    """The book of one symbol. ``step(ts_ms)`` changes it and returns the diff as a tuple
    ``(U, u, ts, bids, asks)`` with ``[(price, qty), ...]`` in scaled ints."""

    def __init__(
        self,
        symbol: str,
        seed: int = 1,
        mid: int = 60_000 * SCALE,
        tick: int = SCALE // 100,
        levels: int = 1000,
        changes: int = 40,
        first_update_id: int = 1_000_000,
    ) -> None:
        self.symbol = symbol.upper()
        self.tick, self.changes = tick, changes
        self.rng = random.Random(f"{self.symbol}:{seed}")
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        for k in range(1, levels + 1):
            self.bids[mid - k * tick] = self._qty()
            self.asks[mid + k * tick] = self._qty()
        self.update_id = first_update_id
        # Heaps of prices (bids negated), entries of removed levels dropped lazily: the best
        # price in O(log n) without the sorted structure the client under test keeps.
        self._heaps: tuple[list[int], list[int]] = ([-p for p in self.bids], list(self.asks))
        heapq.heapify(self._heaps[0])
        heapq.heapify(self._heaps[1])

    def _qty(self) -> int:
        return self.rng.randint(1, 200_000) * 10_000  # 0.0001 .. 20 in steps of 0.0001

    def best_bid(self) -> int:
        heap, bids = self._heaps[0], self.bids
        while -heap[0] not in bids:  # removed levels leave their heap entries behind
            heapq.heappop(heap)
        return -heap[0]

    def best_ask(self) -> int:
        heap, asks = self._heaps[1], self.asks
        while heap[0] not in asks:
            heapq.heappop(heap)
        return heap[0]

    def step(self, ts_ms: int) -> tuple[int, int, int, list, list]:
        rng, tick = self.rng, self.tick
        best_bid, best_ask = self.best_bid(), self.best_ask()
        changed: tuple[dict[int, int], dict[int, int]] = ({}, {})
        n = max(1, int(rng.expovariate(1 / self.changes)))
        for _ in range(n):
            is_bid = rng.random() < 0.5
            side = self.bids if is_bid else self.asks
            roll = rng.random()
            if roll < 0.04 and len(side) > 10:  # the best level traded away
                price = best_bid if is_bid else best_ask
                qty = 0
            else:
                depth = 1 + min(int(rng.expovariate(0.08)), 2000)
                price = best_ask - depth * tick if is_bid else best_bid + depth * tick
                if price <= 0:
                    continue
                qty = 0 if roll < 0.3 and price in side and len(side) > 10 else self._qty()
            if qty:
                side[price] = qty
            elif side.pop(price, None) is None:
                continue
            changed[0 if is_bid else 1][price] = qty
            if qty:
                heapq.heappush(self._heaps[0 if is_bid else 1], -price if is_bid else price)
            best_bid, best_ask = self.best_bid(), self.best_ask()
        first = self.update_id + 1
        self.update_id += max(1, len(changed[0]) + len(changed[1])) + rng.randint(0, 3)
        return (first, self.update_id, ts_ms, list(changed[0].items()), list(changed[1].items()))

    def frame(self, diff: tuple, stream: str = "depth@100ms") -> bytes:
        first, last, ts, bids, asks = diff
        data = {
            "e": "depthUpdate", "E": ts, "s": self.symbol, "U": first, "u": last,
            "b": [[fmt8(p), fmt8(q)] for p, q in bids], "a": [[fmt8(p), fmt8(q)] for p, q in asks],
        }  # fmt: skip
        return orjson.dumps({"stream": f"{self.symbol.lower()}@{stream}", "data": data})

    def snapshot(self, limit: int = 5000) -> bytes:
        """The ``/api/v3/depth`` answer for the book as it stands."""
        bids = sorted(self.bids.items(), reverse=True)[:limit]
        asks = sorted(self.asks.items())[:limit]
        return orjson.dumps(
            {
                "lastUpdateId": self.update_id,
                "bids": [[fmt8(p), fmt8(q)] for p, q in bids],
                "asks": [[fmt8(p), fmt8(q)] for p, q in asks],
            }
        )
