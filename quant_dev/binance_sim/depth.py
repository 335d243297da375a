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

DEPTH_PATH = "/api/v3/depth"
DEPTH_TICK_S = 0.1  # the @depth@100ms cadence


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

    def step(self, ts_ms: int, top: tuple[int, int, int, int] | None = None) -> tuple:
        """Change the book and return the diff. ``top`` = (bid, bid qty, ask, ask qty) pins the
        best levels (the simulator's book ticker): levels inside it are removed, and the random
        changes then stay strictly behind it."""
        rng, tick = self.rng, self.tick
        changed: tuple[dict[int, int], dict[int, int]] = ({}, {})
        if top is not None:
            self._pin(top, changed)
        best_bid, best_ask = self.best_bid(), self.best_ask()
        n = max(1, int(rng.expovariate(1 / self.changes)))
        for _ in range(n):
            is_bid = rng.random() < 0.5
            side = self.bids if is_bid else self.asks
            roll = rng.random()
            if roll < 0.04 and len(side) > 10 and top is None:  # the best level traded away
                price = best_bid if is_bid else best_ask
                qty = 0
            else:
                depth = 1 + min(int(rng.expovariate(0.08)), 2000)
                if top is None:  # anywhere up to the other side's best
                    price = best_ask - depth * tick if is_bid else best_bid + depth * tick
                else:  # behind the pinned best
                    price = best_bid - depth * tick if is_bid else best_ask + depth * tick
                if price <= 0:
                    continue
                qty = 0 if roll < 0.3 and price in side and len(side) > 10 else self._qty()
            self._set(is_bid, price, qty, changed)
            best_bid, best_ask = self.best_bid(), self.best_ask()
        first = self.update_id + 1
        self.update_id += max(1, len(changed[0]) + len(changed[1])) + rng.randint(0, 3)
        return (first, self.update_id, ts_ms, list(changed[0].items()), list(changed[1].items()))

    def _set(self, is_bid: bool, price: int, qty: int, changed: tuple[dict, dict]) -> None:
        side = self.bids if is_bid else self.asks
        if qty:
            side[price] = qty
            heapq.heappush(self._heaps[0 if is_bid else 1], -price if is_bid else price)
        elif side.pop(price, None) is None:
            return
        changed[0 if is_bid else 1][price] = qty

    def _pin(self, top: tuple[int, int, int, int], changed: tuple[dict, dict]) -> None:
        bid, bid_qty, ask, ask_qty = top
        for price in [p for p in self.bids if p > bid]:
            self._set(True, price, 0, changed)
        for price in [p for p in self.asks if p < ask]:
            self._set(False, price, 0, changed)
        if self.bids.get(bid) != bid_qty:
            self._set(True, bid, bid_qty, changed)
        if self.asks.get(ask) != ask_qty:
            self._set(False, ask, ask_qty, changed)

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


class DepthFeed:
    """The simulator's depth side: a ``DepthMarket`` per symbol whose best levels follow the
    symbol's book ticker, one ``depthUpdate`` every 100 ms for the symbols someone subscribed
    to (``<symbol>@depth@100ms`` or ``<symbol>@depth``, the 1 s stream also every 100 ms
    here), and the ``/api/v3/depth`` answer at the current state.

    Faults (``POST /_sim/depth`` {"drop": n, "stale": n}): ``drop`` leaves the next n diffs
    out of the stream (the book moves on: a client sees a gap); ``stale`` answers the next n
    snapshot requests with the book as it was about a second earlier, older than the first
    diff a client that just subscribed buffered; ``hold`` (with ``hold_s``, seconds) sends the
    next n up-to-date answers only after ``hold_s``, so a test knows the client is in the
    middle of a sync for that long. A reconnect in the middle of a sync is the existing
    ``disconnect`` trigger, pulled while an answer is held."""

    STALE_EVERY = 10  # ticks (1 s) between the books kept for ``stale`` answers

    def __init__(self, specs: dict[str, tuple[int, int]], seed: int) -> None:
        self.specs, self.seed = specs, seed
        # Built on first use: a simulator of many symbols pays only for the books asked for.
        self.markets: dict[str, DepthMarket] = {}
        self.tops: dict[str, tuple[int, int, int, int]] = {}
        self.kept: dict[str, tuple[int, dict, dict]] = {}
        self.ticks = 0
        self.drop = 0
        self.stale = 0
        self.hold = 0
        self.hold_s = 0.0
        self.held = 0.0  # the delay of the answer just made (taken by the server)
        self.stats = {
            "diffs_sent": 0, "diffs_dropped": 0, "snapshots": 0, "stale_snapshots": 0,
            "held_snapshots": 0,
        }  # fmt: skip

    def market(self, symbol: str) -> DepthMarket:
        m = self.markets.get(symbol)
        if m is None:
            mid, tick = self.specs[symbol]
            m = DepthMarket(symbol, seed=self.seed, mid=mid, tick=tick, levels=500, changes=20)
            self.markets[symbol] = m
        return m

    def observe(self, generated) -> None:
        """Keep each symbol's latest book ticker (the last event's (u, bid, bid qty, ask, ask
        qty)) from what the market clock generated: ``[(SymbolMarket, events), ...]``."""
        for m, events in generated:
            if events:
                self.tops[m.spec.symbol] = events[-1][8][1:]

    def tick(self, now_ms: int, active) -> list[tuple[str, bytes]]:
        """One diff per symbol whose depth stream someone subscribes to (``active``)."""
        self.ticks += 1
        out = []
        for symbol in self.specs:
            names = (f"{symbol.lower()}@depth@100ms", f"{symbol.lower()}@depth")
            streams = [name for name in names if name in active]
            if not streams:
                continue
            m = self.market(symbol)
            if self.ticks % self.STALE_EVERY == 1 or symbol not in self.kept:
                self.kept[symbol] = (m.update_id, dict(m.bids), dict(m.asks))
            diff = m.step(now_ms, self.tops.get(symbol))
            if self.drop:
                self.drop -= 1
                self.stats["diffs_dropped"] += 1
                continue
            for stream in streams:
                out.append((stream, m.frame(diff, stream.partition("@")[2])))
                self.stats["diffs_sent"] += 1
        return out

    def answer(self, symbol: str, limit: int) -> dict:
        m = self.market(symbol)
        self.stats["snapshots"] += 1
        update_id, bids, asks = m.update_id, m.bids, m.asks
        if self.stale and symbol in self.kept:
            self.stale -= 1
            self.stats["stale_snapshots"] += 1
            update_id, bids, asks = self.kept[symbol]
        elif self.hold:
            self.hold -= 1
            self.stats["held_snapshots"] += 1
            self.held = self.hold_s
        return {
            "lastUpdateId": update_id,
            "bids": [[fmt8(p), fmt8(q)] for p, q in sorted(bids.items(), reverse=True)[:limit]],
            "asks": [[fmt8(p), fmt8(q)] for p, q in sorted(asks.items())[:limit]],
        }

    def take_held(self) -> float:
        """Seconds to hold the answer just made before sending it (0: send it now)."""
        held, self.held = self.held, 0.0
        return held

    def control(self, body: dict) -> dict:
        for name in ("drop", "stale", "hold"):
            value = body.get(name, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}={value!r} must be a non-negative integer")
            setattr(self, name, getattr(self, name) + value)
        if "hold_s" in body:
            value = body["hold_s"]
            if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"hold_s={value!r} must be a non-negative number of seconds")
            self.hold_s = float(value)
        return {"drop": self.drop, "stale": self.stale, "hold": self.hold, **self.stats}
