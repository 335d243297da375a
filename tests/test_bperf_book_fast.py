"""The fast depth path against simple references on random input: the burst decoder (levels
read from raw JSON at once) against the general per-string decoder, the book against a plain
dict book, and ``DepthBooks`` built on both against one built on the
references, through gaps, duplicates, crossed books, bad frames, bad snapshots and
reconnects: every output identical."""

from __future__ import annotations

import json
import random

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_core.book import UNBOUNDED, OrderBook
from quant_core.decode import scaled
from quant_core.depth_decode import DepthDecoder, read_levels
from quant_core.depth_sync import DepthBooks

SYMBOL = "BTCUSDT"


# -- a plain reference book ------------------------------------------------------------------
class DictSide:
    def __init__(self, sign: int) -> None:
        self.sign, self.levels = sign, {}

    def apply(self, prices, qtys) -> None:
        for p, q in zip(prices, qtys, strict=True):
            if q:
                self.levels[p] = q
            else:
                self.levels.pop(p, None)

    def best(self):
        return (max if self.sign == 1 else min)(self.levels, default=None)

    def top(self, n):
        items = sorted(self.levels.items(), reverse=self.sign == 1)[:n]
        return [p for p, _ in items], [q for _, q in items]


class DictBook:
    """What ``OrderBook`` must behave like: two dicts, sorted when asked."""

    def __init__(self) -> None:
        self.bids, self.asks = DictSide(1), DictSide(-1)
        self.bid_bound, self.ask_bound = 0, UNBOUNDED

    def load(self, bid_price, bid_qty, ask_price, ask_qty, limit) -> None:
        self.bids.levels = dict(zip(bid_price, bid_qty, strict=True))
        self.asks.levels = dict(zip(ask_price, ask_qty, strict=True))
        self.bid_bound = bid_price[-1] if len(bid_price) >= limit else 0
        self.ask_bound = ask_price[-1] if len(ask_price) >= limit else UNBOUNDED

    def clear(self) -> None:
        self.load([], [], [], [], 1)
        self.bid_bound, self.ask_bound = 0, UNBOUNDED

    def crossed(self) -> bool:
        bid, ask = self.bids.best(), self.asks.best()
        return bid is not None and ask is not None and bid >= ask

    def top(self, n):
        bp, bq = self.bids.top(n)
        ap, aq = self.asks.top(n)
        bids_known = (bp[-1] >= self.bid_bound) if len(bp) == n else self.bid_bound == 0
        asks_known = (ap[-1] <= self.ask_bound) if len(ap) == n else self.ask_bound == UNBOUNDED
        return bp, bq, ap, aq, bids_known, asks_known


def test_large_book_equals_dict_book() -> None:
    """Thousands of prices, most removed again: every top, best, length and the levels
    stay those of the dict book."""
    rng = random.Random(7)
    book, ref = OrderBook(), DictBook()
    start = [(p, rng.randint(1, 9)) for p in range(1, 1500)]
    book.load([p for p, _ in start[::-1]], [q for _, q in start[::-1]], [], [], 5000)
    ref.load([p for p, _ in start[::-1]], [q for _, q in start[::-1]], [], [], 5000)
    for step in range(4000):
        prices = [rng.randint(1, 4000) for _ in range(rng.randint(0, 30))]
        qtys = [rng.choice([0, 0, 0, 1, 5]) for _ in prices]
        side = rng.choice(["bids", "asks"])
        getattr(book, side).apply(prices, qtys)
        getattr(ref, side).apply(prices, qtys)
        assert book.crossed() == ref.crossed()
        if step % 25 == 0:
            n = rng.choice([1, 5, 20, 200])
            assert book.top(n) == ref.top(n)
            assert len(book.bids) == len(ref.bids.levels)
            assert book.asks.levels == ref.asks.levels
            assert book.bids.best() == ref.bids.best()


# -- random depth input ----------------------------------------------------------------------
def text(value: int, form: str):
    """A level number in one of the forms a frame may carry (most are Binance's)."""
    whole, frac = divmod(value, 10**8)
    if form == "binance":
        return f"{whole}.{frac:08d}"
    if form == "short":  # exact, not Binance's form
        return f"{whole}.{frac:08d}".rstrip("0").rstrip(".") or "0"
    if form == "padded":  # exact, more than 8 decimals
        return f"{whole}.{frac:08d}00"
    return {
        "negative": f"-{whole}.{frac:08d}",
        "nan": "NaN",
        "exponent": "1e2",
        "unicode": f"{whole}.{frac:08d}".replace("1", "\uff11"),
        "number": value / 10**8,
        "fine": f"{whole}.{frac:08d}1",
    }[form]


forms = st.sampled_from(["binance"] * 12 + ["short", "padded", "negative", "nan", "exponent",
                                            "unicode", "number", "fine"])  # fmt: skip
prices = st.one_of(
    st.integers(1, 40).map(lambda k: k * 10**6),
    st.sampled_from([99_999_999_999_999_999, 10**17 + 12_345_678, 123_456_789_012]),
)
qtys = st.sampled_from([0, 0, 1, 10**8, 123_456_789, 10**17 + 5, 999_999_999_999_999_999])
levels = st.lists(st.tuples(prices, qtys, forms), max_size=8)


@st.composite
def diffs(draw, ids):
    gap = draw(st.sampled_from([0] * 8 + [1, 5, -1, -3]))
    first = max(1, ids[0] + 1 + gap)
    last = first + draw(st.integers(0, 2))
    ids[0] = max(ids[0], last)
    frame = {
        "stream": draw(st.sampled_from(["btcusdt@depth@100ms"] * 9 + ["btcusdt@depth"])),
        "data": {
            "e": "depthUpdate",
            "E": 1_700_000_000_000 + 150 * ids[0],
            "s": draw(st.sampled_from([SYMBOL] * 9 + ["ETHUSDT"])),
            "U": first,
            "u": last,
            "b": [[text(p, f), text(q, f)] for p, q, f in draw(levels)],
            "a": [[text(p, f), text(q, f)] for p, q, f in draw(levels)],
        },
    }
    if draw(st.integers(0, 9)) == 0:  # spaced JSON: not the fast path's form
        return json.dumps(frame).encode()
    if draw(st.integers(0, 19)) == 0:
        return orjson.dumps(frame)[:-3]  # cut short
    return orjson.dumps(frame)


@st.composite
def snapshot(draw, ids):
    n_bids, n_asks = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    bids = sorted(draw(st.sets(st.integers(1, 20), min_size=n_bids, max_size=n_bids)))[::-1]
    asks = sorted(draw(st.sets(st.integers(21, 40), min_size=n_asks, max_size=n_asks)))
    if draw(st.integers(0, 7)) == 0:
        bids = bids[::-1]  # out of order when two or more
    body = {
        "lastUpdateId": max(0, ids[0] - draw(st.integers(-1, 4))),
        "bids": [[text(p * 10**6, "binance"), "1.50000000"] for p in bids],
        "asks": [[text(p * 10**6, "binance"), "2.00000000"] for p in asks],
    }
    return orjson.dumps(body)


@st.composite
def sessions(draw):
    ids = [draw(st.integers(1, 1000))]
    items: list[tuple] = [("connect",)]
    for _ in range(draw(st.integers(1, 25))):
        kind = draw(st.sampled_from(["frames"] * 6 + ["snapshot"] * 2 + ["connect"]))
        if kind == "frames":
            items.append(("frames", draw(st.lists(diffs(ids), min_size=1, max_size=6))))
        elif kind == "snapshot":
            items.append(("snapshot", SYMBOL, None, draw(snapshot(ids))))
        else:
            items.append(("connect",))
    return items


def batch_columns(batch) -> dict[str, list]:
    return {name: getattr(batch, name).tolist() for name in batch.__dataclass_fields__}


@settings(max_examples=100, deadline=None)
@given(st.lists(diffs([1]), max_size=12))
def test_burst_decoder_equals_the_general_decoder(frames) -> None:
    fast, general = DepthDecoder([SYMBOL]), DepthDecoder([SYMBOL])
    assert batch_columns(fast.decode(frames)) == batch_columns(general.decode_general(frames))
    assert fast.rejects == general.rejects and fast.samples == general.samples


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.tuples(prices, qtys, forms), max_size=5), max_size=6))
def test_read_levels_equals_scaled_or_declines(arrays) -> None:
    raws = [orjson.dumps([[text(p, f), text(q, f)] for p, q, f in a]) for a in arrays]
    read = read_levels(raws)
    texts = [t for a in arrays for p, q, f in a for t in (text(p, f), text(q, f))]
    if all(f == "binance" for a in arrays for _, _, f in a):
        assert read is not None  # Binance's own form is always read here
    if read is not None:
        counts, values = read
        assert counts.tolist() == [len(a) for a in arrays]
        assert values.tolist() == [scaled(t) for t in texts]


def run(books: DepthBooks, items: list[tuple]) -> list:
    outputs = []
    for item in items:
        books.feed(item)
        out = books.take()
        outputs.append(
            (
                {k: v.tolist() for k, v in out.updates.items()},
                out.snapshots,
                out.resyncs,
                out.synced,
                out.requests,
            )
        )
    counters = (books.decoder.rejects, books.snapshot_rejects, books.faults, books.skipped_diffs)
    return [outputs, counters, books.ignored_answers, books.overflowed_diffs, books.rows]


@settings(max_examples=80, deadline=None)
@given(sessions(), st.sampled_from([1, 3, 20]), st.sampled_from([1, 3, 5000]))
def test_depth_books_equal_the_reference_path(items, depth, limit) -> None:
    """Fast decoder and book vs general decoder and dict book, same inputs: same output."""
    fast = DepthBooks([SYMBOL], depth=depth, interval_ms=300, limit=limit)
    ref = DepthBooks([SYMBOL], depth=depth, interval_ms=300, limit=limit)
    ref.decoder.decode = ref.decoder.decode_general
    for state in ref.states.values():
        state.book = DictBook()
    assert run(fast, items) == run(ref, items)


def test_the_reference_path_is_not_the_fast_path() -> None:
    """The comparison above means something: the fast decoder reads Binance's form itself
    (read_levels answers) and declines any other, which the general decoder then reads."""
    frame = orjson.dumps(
        {"stream": "btcusdt@depth@100ms", "data": {"e": "depthUpdate", "E": 1, "s": SYMBOL,
         "U": 1, "u": 1, "b": [["1.00000000", "0.00000000"]], "a": []}}
    )  # fmt: skip
    assert read_levels([b'[["1.00000000","0.00000000"]]', b"[]"]) is not None
    assert read_levels([b'[["1.0","0.00000000"]]']) is None
    assert read_levels([b'[ ["1.00000000","0.00000000"]]']) is None
    batch = DepthDecoder([SYMBOL]).decode([frame])
    assert batch.price.tolist() == [10**8] and batch.qty.tolist() == [0]
    assert np.array_equal(batch.start, [0, 1])
