"""An exact limit order book: price -> quantity per side, as scaled integers (10**8).

Each side is a compiled ``quant_core.native.book.Side``: two int64 arrays (prices and
quantities) kept sorted by ``sign * price``, so the best price is the LAST entry (bids by
price, asks by negated price). Why this layout (benchmarks/bench_book.py measures it against
the others):

* changes cluster at the top of the book, which is the end of the arrays: the search gallops
  from the end, and an insert or a delete moves only the entries past it (a short ``memmove``
  even with 10,000 levels);
* top-N is read backwards from the end, so a snapshot every second costs next to nothing,
  unlike a dict that must be sorted (or heap-selected) for each snapshot;
* a diff of a decoded burst is applied straight from the burst's int64 columns
  (``OrderBook.apply_run``: a run of diffs in one call), with no Python object per level.

Prices and quantities are int64 (the decoder's columns are; a Python int beyond int64 raises
``OverflowError`` and changes nothing). tests/test_natbook_*.py hold the sides to a dict book.

The book also knows how far its data reaches. A REST snapshot of ``limit`` levels says nothing
about prices beyond its deepest level: they stay unknown until a diff changes them, and
``top`` reports per side whether all N levels it returns lie inside the covered range (a side
the snapshot returned whole, fewer than ``limit`` levels, is covered to the end).
"""

from __future__ import annotations

from quant_core.native.book import Side, apply_run, crossed

UNBOUNDED = 2**63 - 1  # an ask bound covering every price


class BookSide(Side):
    """One side of a book; ``sign`` is 1 for bids, -1 for asks (keys are ``sign * price``).

    ``apply(prices, qtys[, start, stop])`` sets each price's quantity in order (0 removes the
    level); ``load(prices, qtys)`` replaces the side (any order, distinct prices);
    ``best()``; ``top(n)`` -> (prices, quantities) of the best ``n``, best first; ``len``.
    ``levels`` (price -> quantity) and ``keys`` (sorted, best last) are copies, for tests and
    inspection. Any failing call raises and leaves the side as it was."""

    __slots__ = ()


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
        return crossed(self.bids, self.asks)

    def apply_run(
        self, columns: tuple, i: int, code: int, last_id: int, next_due: int
    ) -> tuple[int, int, int, int, bool]:
        """The in-sync run of a decoded burst from diff ``i`` on, in one C call. ``columns``:
        the burst's int64 price, qty, start, mid, first, last, ts and symbol code columns.
        Applies each diff while it is of ``code``, follows the book (``u > last_id >= U - 1``)
        and comes before ``next_due``; stops before the first that is not so, or after one that
        leaves the book crossed. Returns (stop, last_id, last_ts, levels applied, crossed)."""
        return apply_run(self.bids, self.asks, *columns, i, code, last_id, next_due)

    def top(self, n: int) -> tuple[list[int], list[int], list[int], list[int], bool, bool]:
        """Best ``n`` levels a side: bid prices, bid qtys, ask prices, ask qtys (best first),
        and whether each side's ``n`` levels all lie in the known range."""
        bp, bq = self.bids.top(n)
        ap, aq = self.asks.top(n)
        bids_known = (bp[-1] >= self.bid_bound) if len(bp) == n else self.bid_bound == 0
        asks_known = (ap[-1] <= self.ask_bound) if len(ap) == n else self.ask_bound == UNBOUNDED
        return bp, bq, ap, aq, bids_known, asks_known
