"""An exact limit order book: price -> quantity per side, as scaled integers (10**8).

Each side is a dict (price -> quantity) plus a Python list of its prices kept sorted with
``bisect``, oriented so that the best price is at the END of the list (bids by price, asks by
negated price). Why this layout (benchmarks/bench_book.py measures it against the others):

* most level changes update a quantity at a price already in the book: one dict store;
* an insert or a delete moves only the list entries past it, and changes cluster at the top
  of the book, which is the end of the list: a short ``memmove`` even with 10,000 levels;
* top-N is a slice from the end, so a snapshot every second costs next to nothing, unlike a
  dict that must be sorted (or heap-selected) for each snapshot.

The book also knows how far its data reaches. A REST snapshot of ``limit`` levels says nothing
about prices beyond its deepest level: they stay unknown until a diff changes them, and
``top`` reports per side whether all N levels it returns lie inside the covered range (a side
the snapshot returned whole, fewer than ``limit`` levels, is covered to the end).
"""

from __future__ import annotations

from bisect import bisect_left, insort

UNBOUNDED = 2**63 - 1  # an ask bound covering every price


class BookSide:
    """One side of a book; ``sign`` is 1 for bids, -1 for asks (keys are ``sign * price``)."""

    __slots__ = ("keys", "levels", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.levels: dict[int, int] = {}
        self.keys: list[int] = []  # sign * price, ascending: best last

    def __len__(self) -> int:
        return len(self.levels)

    def load(self, prices: list[int], qtys: list[int]) -> None:
        """Replace the side with these levels (any order, distinct prices, quantities > 0)."""
        self.levels = dict(zip(prices, qtys, strict=True))
        sign = self.sign
        self.keys = sorted(p * sign for p in self.levels)

    def apply(self, prices: list[int], qtys: list[int]) -> None:
        """Set each price's quantity, in order; quantity 0 removes the level."""
        levels, keys, sign = self.levels, self.keys, self.sign
        for p, q in zip(prices, qtys, strict=True):
            if q:
                if p not in levels:
                    insort(keys, p * sign)
                levels[p] = q
            elif p in levels:
                del levels[p]
                del keys[bisect_left(keys, p * sign)]

    def best(self) -> int | None:
        return self.keys[-1] * self.sign if self.keys else None

    def top(self, n: int) -> tuple[list[int], list[int]]:
        """(prices, quantities) of the best ``n`` levels, best first."""
        keys = self.keys[-1 : -n - 1 : -1]
        prices = keys if self.sign == 1 else [-k for k in keys]
        levels = self.levels
        return prices, [levels[p] for p in prices]


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
        bids, asks = self.bids.keys, self.asks.keys
        return bool(bids) and bool(asks) and bids[-1] >= -asks[-1]

    def top(self, n: int) -> tuple[list[int], list[int], list[int], list[int], bool, bool]:
        """Best ``n`` levels a side: bid prices, bid qtys, ask prices, ask qtys (best first),
        and whether each side's ``n`` levels all lie in the known range."""
        bp, bq = self.bids.top(n)
        ap, aq = self.asks.top(n)
        bids_known = (bp[-1] >= self.bid_bound) if len(bp) == n else self.bid_bound == 0
        asks_known = (ap[-1] <= self.ask_bound) if len(ap) == n else self.ask_bound == UNBOUNDED
        return bp, bq, ap, aq, bids_known, asks_known
