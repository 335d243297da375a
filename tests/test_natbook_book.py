"""The compiled book side (quant_core/native/book.c) against a dict + sorted reference on random
input: applies from lists and from int64 columns, loads with repeated prices, removals of absent
levels, re-adds, values at the ends of int64, crossed and locked books, the in-sync run of a
burst (``apply_run``), and every kind of bad argument, which must raise and change nothing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.book import BookSide, OrderBook

BIG = 2**63 - 1
prices = st.one_of(st.integers(1, 40), st.sampled_from([BIG, BIG - 1, -BIG, 10**18]))
qtys = st.one_of(st.sampled_from([0, 0, 0, 1, 7, BIG, -5]), st.integers(-(2**63), BIG))
changes = st.lists(st.tuples(prices, qtys), max_size=15)


class RefSide:
    """A dict, sorted when asked: what a side must equal."""

    def __init__(self, sign: int) -> None:
        self.sign, self.levels = sign, {}

    def apply(self, changes) -> None:
        for p, q in changes:
            if q:
                self.levels[p] = q
            else:
                self.levels.pop(p, None)

    def top(self, n: int):
        items = sorted(self.levels.items(), reverse=self.sign == 1)[:n]
        return [p for p, _ in items], [q for _, q in items]

    def best(self):
        return self.top(1)[0][0] if self.levels else None


def apply_one(book: OrderBook, price: np.ndarray, qty: np.ndarray, n_bids: int) -> bool:
    """One diff (bids ``[:n_bids]``, asks after) as a burst of one; whether it crossed."""
    one = [np.array(c, dtype=np.int64) for c in ([0, len(price)], [n_bids], [1], [1], [0], [0])]
    got = book.apply_run((price.astype(np.int64), qty.astype(np.int64), *one), 0, 0, 0, 1)
    assert got[:2] == (1, 1)
    return got[4]


def assert_same(side: BookSide, ref: RefSide) -> None:
    assert side.levels == ref.levels
    assert len(side) == len(ref.levels)
    assert side.keys == sorted(p * ref.sign for p in ref.levels)
    assert side.best() == ref.best()
    for n in (0, 1, 3, 50):
        assert side.top(n) == ref.top(n)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from([1, -1]),
    st.lists(st.tuples(prices, qtys), max_size=20),
    st.lists(st.tuples(st.sampled_from(["list", "array", "range"]), changes), max_size=25),
)
def test_side_equals_the_reference(sign, start, ops) -> None:
    side, ref = BookSide(sign), RefSide(sign)
    side.load([p for p, _ in start], [q for _, q in start])
    ref.levels = dict(start)  # a repeated price keeps its last quantity
    assert_same(side, ref)
    for form, levels in ops:
        p, q = [p for p, _ in levels], [q for _, q in levels]
        if form == "list":
            side.apply(p, q)
        elif form == "array":
            side.apply(np.array(p, dtype=np.int64), np.array(q, dtype=np.int64))
        else:  # a range of longer columns, read in place
            pad = [5, 6]
            cols = [np.array(pad + c + pad, dtype=np.int64) for c in (p, q)]
            side.apply(cols[0], cols[1], 2, 2 + len(p))
        ref.apply(levels)
        assert_same(side, ref)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(changes, changes), max_size=12))
def test_one_diff_runs_and_crossed_equal_the_reference(diffs) -> None:
    book, bids, asks = OrderBook(), RefSide(1), RefSide(-1)
    for bid_changes, ask_changes in diffs:
        levels = bid_changes + ask_changes
        price = np.array([p for p, _ in levels], dtype=np.int64)
        qty = np.array([q for _, q in levels], dtype=np.int64)
        crossed = apply_one(book, price, qty, len(bid_changes))
        bids.apply(bid_changes)
        asks.apply(ask_changes)
        want = bool(bids.levels and asks.levels and bids.best() >= asks.best())
        assert crossed == want == book.crossed()
        assert_same(book.bids, bids)
        assert_same(book.asks, asks)


def test_locked_book_is_crossed() -> None:
    book = OrderBook()
    book.load([100], [1], [101], [1], limit=10)
    assert not book.crossed()
    assert apply_one(book, np.array([101]), np.array([2]), 1)  # best bid = best ask: locked
    assert book.top(1)[:4] == ([101], [2], [101], [1])


def test_many_levels_keep_order() -> None:
    """Thousands of inserts at both ends and in the middle, growing the arrays many times."""
    side, ref = BookSide(-1), RefSide(-1)
    rng = np.random.default_rng(5)
    for _ in range(200):
        p = rng.integers(1, 20_000, 60).tolist()
        q = rng.choice([0, 1, 2, 3], 60).tolist()
        side.apply(p, q)
        ref.apply(zip(p, q, strict=True))
    assert_same(side, ref)
    assert len(side) > 5000


BAD_CALLS = [
    (lambda s: s.apply([1, 2], [1]), ValueError),
    (lambda s: s.apply([1], [1, 2]), ValueError),
    (lambda s: s.apply([1, 2**63], [1, 1]), OverflowError),
    (lambda s: s.apply([1, 2], [1, -(2**63) - 1]), OverflowError),
    (lambda s: s.apply([1, -(2**63)], [1, 1]), OverflowError),  # no int64 negation
    (lambda s: s.apply([1, "2"], [1, 1]), TypeError),
    (lambda s: s.apply([1, 2.0], [1, 1]), TypeError),
    (lambda s: s.apply(5, [1]), TypeError),
    (lambda s: s.apply(np.array([1, 2]), np.array([1, 1]), 1, 3), ValueError),
    (lambda s: s.apply(np.array([1, 2]), np.array([1, 1]), 2, 1), ValueError),
    (lambda s: s.apply(np.array([1, 2]), np.array([1, 1]), -1, 1), ValueError),
    (lambda s: s.load([1, 2], [1]), ValueError),
    (lambda s: s.load([2**64], [1]), OverflowError),
]


@pytest.mark.parametrize(("call", "error"), BAD_CALLS)
def test_bad_arguments_raise_and_change_nothing(call, error) -> None:
    side = BookSide(1)
    side.load([10, 20, 30], [1, 2, 3])
    with pytest.raises(error):
        call(side)
    assert side.levels == {10: 1, 20: 2, 30: 3} and side.keys == [10, 20, 30]


def test_other_int_buffers_are_read_exactly() -> None:
    """An int32 array or a strided view is not read in place but converted, exactly."""
    side = BookSide(1)
    side.apply(np.array([3, 1, 2], dtype=np.int32), np.array([1, 1, 9, 9, 2, 2])[::2])
    assert side.levels == {3: 1, 1: 9, 2: 2}


def test_sign_is_checked() -> None:
    with pytest.raises(ValueError, match="sign"):
        BookSide(0)
    book = OrderBook()
    book.bids, book.asks = book.asks, book.bids
    with pytest.raises(ValueError, match="sign"):
        book.crossed()


# -- the in-sync run of a decoded burst ------------------------------------------------------
@st.composite
def bursts(draw):
    n = draw(st.integers(0, 12))
    codes, first, last, ts, levels = [], [], [], [], []
    uid, t = 100, 1000
    for _ in range(n):
        codes.append(draw(st.sampled_from([0] * 6 + [1])))
        gap = draw(st.sampled_from([0] * 6 + [1, -1, -5]))
        f = uid + 1 + gap
        u = f + draw(st.integers(-1, 2))
        uid = max(uid, u)
        t += draw(st.integers(0, 400))
        first.append(f)
        last.append(u)
        ts.append(t)
        levels.append((draw(changes), draw(changes)))
    return codes, first, last, ts, levels


def columns(burst):
    codes, first, last, ts, levels = burst
    price, qty, start, mid = [], [], [0], []
    for bid_changes, ask_changes in levels:
        for p, q in bid_changes:
            price.append(p)
            qty.append(q)
        mid.append(len(price))
        for p, q in ask_changes:
            price.append(p)
            qty.append(q)
        start.append(len(price))
    cols = (price, qty, start, mid, first, last, ts, codes)
    return tuple(np.array(c, dtype=np.int64) for c in cols)


@settings(max_examples=120, deadline=None)
@given(bursts(), st.integers(0, 12), st.integers(95, 110), st.integers(1000, 3000))
def test_apply_run_equals_diff_by_diff(burst, i, last_id, next_due) -> None:
    codes, first, last, ts, levels = burst
    i = min(i, len(codes))
    book, bids, asks = OrderBook(), RefSide(1), RefSide(-1)
    got = book.apply_run(columns(burst), i, 0, last_id, next_due)
    # The reference: diff by diff, the rule of depth_sync's in-sync state.
    j, want_last, want_ts, n_levels, crossed = i, last_id, -1, 0, False
    while j < len(codes) and not crossed:
        if codes[j] != 0 or not (last[j] > want_last >= first[j] - 1) or ts[j] >= next_due:
            break
        bids.apply(levels[j][0])
        asks.apply(levels[j][1])
        want_last, want_ts = last[j], ts[j]
        n_levels += len(levels[j][0]) + len(levels[j][1])
        crossed = bool(bids.levels and asks.levels and bids.best() >= asks.best())
        j += 1
    assert got == (j, want_last, want_ts, n_levels, crossed)
    assert_same(book.bids, bids)
    assert_same(book.asks, asks)


def test_apply_run_with_bad_columns_raises_and_changes_nothing() -> None:
    burst = ([0, 0], [101, 102], [101, 102], [1, 2], [([(5, 1)], [(9, 1)])] * 2)
    good = columns(burst)
    bad = [
        (*good[:2], np.array([0, 2, 99]), *good[3:]),  # the second diff's levels beyond price
        (*good[:2], np.array([0, -1, 4]), *good[3:]),
        (*good[:2], np.array([0, 2]), *good[3:]),  # start shorter than diffs + 1
        (*good[:4], np.array([101]), *good[5:]),  # first shorter than the diffs
        (*good[:7], np.array([0])),
        (np.array([5, -(2**63), 5, 9]), *good[1:]),  # a price with no int64 negation
    ]
    for cols in bad:
        book = OrderBook()
        book.load([1], [1], [50], [1], limit=10)
        with pytest.raises((ValueError, OverflowError)):
            book.apply_run(cols, 0, 0, 100, 10**9)
        assert book.bids.levels == {1: 1} and book.asks.levels == {50: 1}
    with pytest.raises(ValueError):
        OrderBook().apply_run(good, 3, 0, 100, 10**9)
    with pytest.raises(TypeError):
        OrderBook().apply_run(good[:7], 0, 0, 100, 10**9)
