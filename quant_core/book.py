"""An exact limit order book: price -> quantity per side, as scaled integers (10**8).

Each side is a dict (price -> quantity) plus a Python list of its prices kept sorted with
``bisect``, oriented so that the best price is at the END of the list (bids by price, asks by
negated price). Why this layout (benchmarks/bench_book.py measures it against the others):

* a diff is applied with one ``dict.update`` (a loop in C): a removed level keeps its price
  with quantity 0 (a "hole") instead of being deleted level by level in Python;
* only a price the dict has never held is inserted into the list (``insort``), and changes
  cluster at the top of the book, which is the end of the list: a short ``memmove``;
* the best price and top-N are read from the end of the list, skipping holes; holes at the
  end are dropped as they are met, and the side is compacted when holes outnumber the levels,
  so a snapshot every second costs next to nothing, unlike a dict sorted for each snapshot.

The book also knows how far its data reaches. A REST snapshot of ``limit`` levels says nothing
about prices beyond its deepest level: they stay unknown until a diff changes them, and
``top`` reports per side whether all N levels it returns lie inside the covered range (a side
the snapshot returned whole, fewer than ``limit`` levels, is covered to the end).
"""

from __future__ import annotations

from bisect import insort
from operator import countOf

UNBOUNDED = 2**63 - 1  # an ask bound covering every price
MIN_COMPACT = 1024  # prices held (levels and holes) below which a side is never compacted


class BookSide:
    """One side of a book; ``sign`` is 1 for bids, -1 for asks (keys are ``sign * price``).
    ``held`` maps every price held to its quantity, 0 for a removed level not yet dropped (a
    hole); ``keys`` holds ``sign * price`` of every price in ``held``, ascending: best last."""

    __slots__ = ("compact_at", "held", "keys", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.held: dict[int, int] = {}
        self.keys: list[int] = []
        self.compact_at = MIN_COMPACT

    def __len__(self) -> int:
        return len(self.held) - countOf(self.held.values(), 0)

    @property
    def levels(self) -> dict[int, int]:
        """The levels, price -> quantity (a copy without the holes)."""
        return {p: q for p, q in self.held.items() if q}

    def load(self, prices: list[int], qtys: list[int]) -> None:
        """Replace the side with these levels (any order, distinct prices, quantities > 0)."""
        self.held = dict(zip(prices, qtys, strict=True))
        sign = self.sign
        self.keys = sorted(p * sign for p in self.held)
        self.compact_at = max(MIN_COMPACT, 2 * len(self.keys))

    def apply(self, prices: list[int], qtys: list[int]) -> None:
        """Set each price's quantity, in order; quantity 0 removes the level."""
        if len(prices) != len(qtys):
            raise ValueError(f"{len(prices)} prices but {len(qtys)} quantities")
        held = self.held
        new = set(prices).difference(held)  # looks each price up in the dict, in C
        held.update(zip(prices, qtys, strict=True))
        if new:
            keys, sign = self.keys, self.sign
            for p in new:
                insort(keys, p * sign)
            if len(keys) > self.compact_at:
                self.compact()

    def compact(self) -> None:
        """Drop the holes (removed levels still held)."""
        held, sign = self.held, self.sign
        self.keys = [k for k in self.keys if held[k * sign]]
        self.held = {p: q for p, q in held.items() if q}
        self.compact_at = max(MIN_COMPACT, 2 * len(self.keys))

    def best(self) -> int | None:
        keys, held, sign = self.keys, self.held, self.sign
        while keys:
            price = keys[-1] * sign
            if held[price]:
                return price
            keys.pop()
            del held[price]
        return None

    def top(self, n: int) -> tuple[list[int], list[int]]:
        """(prices, quantities) of the best ``n`` levels, best first. The holes met on the
        way are dropped, so the top of the book stays free of them."""
        keys, held, sign = self.keys, self.held, self.sign
        size = n
        while True:  # the shortest tail of keys (doubling) holding n levels, or all keys
            tail = keys[-size:] if size < len(keys) else keys[:]
            kept = [k for k in tail if held[k * sign]]
            if len(kept) >= n or len(tail) == len(keys):
                break
            size *= 2
        if len(kept) < len(tail):
            for k in tail:
                if not held[k * sign]:
                    del held[k * sign]
            keys[len(keys) - len(tail) :] = kept
        best = kept[: -n - 1 : -1]
        prices = best if sign == 1 else [-k for k in best]
        return prices, [held[p] for p in prices]


class OrderBook:
    """Bids and asks of one symbol, and the price range a snapshot covered on each side."""

    __slots__ = ("ask_bound", "asks", "bid_bound", "bids")

    def __init__(self) -> None:
        self.bids = BookSide(1)
        self.asks = BookSide(-1)
        self.bid_bound = 0  # bids at or above this price are known (0: all of them)
        self.ask_bound = UNBOUNDED  # asks at or below this price are known

    def load(
        self,
        bid_price: list[int],
        bid_qty: list[int],
        ask_price: list[int],
        ask_qty: list[int],
        limit: int,
    ) -> None:
        """Replace the book with a snapshot of at most ``limit`` levels a side, best first."""
        self.bids.load(bid_price, bid_qty)
        self.asks.load(ask_price, ask_qty)
        self.bid_bound = bid_price[-1] if len(bid_price) >= limit else 0
        self.ask_bound = ask_price[-1] if len(ask_price) >= limit else UNBOUNDED

    def clear(self) -> None:
        self.bids.load([], [])
        self.asks.load([], [])
        self.bid_bound, self.ask_bound = 0, UNBOUNDED

    def crossed(self) -> bool:
        """Best bid at or above best ask (crossed or locked): no exchange book looks so."""
        bid, ask = self.bids.best(), self.asks.best()
        return bid is not None and ask is not None and bid >= ask

    def top(self, n: int) -> tuple[list[int], list[int], list[int], list[int], bool, bool]:
        """Best ``n`` levels a side: bid prices, bid qtys, ask prices, ask qtys (best first),
        and whether each side's ``n`` levels all lie in the known range."""
        bp, bq = self.bids.top(n)
        ap, aq = self.asks.top(n)
        bids_known = (bp[-1] >= self.bid_bound) if len(bp) == n else self.bid_bound == 0
        asks_known = (ap[-1] <= self.ask_bound) if len(ap) == n else self.ask_bound == UNBOUNDED
        return bp, bq, ap, aq, bids_known, asks_known
