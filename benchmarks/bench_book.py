"""Depth: Binance diff frames -> exact local order books, with top-20 snapshots every second of
exchange time, in one process, in level changes per second.

Data: one symbol from ``quant_dev.binance_sim.depth.DepthMarket`` (5,000 levels a side, ~40
level changes per 100 ms diff, changes clustered near the top as on a real book), the REST
snapshot after its first diff, then ``N`` diffs.

Ours: ``DepthBooks`` (bursts of ``BURST`` frames read in C straight into int64 columns, the
sync state machine with its id and crossed-book checks, each in-sync run of diffs applied in
one C call to the sorted int64 arrays of ``quant_core/native/book.c``, the ``book_updates``
columns). Peers on
the same frames, each taking a top-20 of both sides every second of exchange time as ours:

* cryptofeed's path: orjson, ``Decimal`` prices and quantities into its ``order_book`` C
  extension (pip ``order-book``, what cryptofeed's ``OrderBook`` is);
* a sorted-dict Python book: orjson, exact ints (``decode.scaled``) into
  ``sortedcontainers.SortedDict``;

and, for the book alone on the same decoded integers, ``SortedDict`` and ``order_book``.
cryptofeed itself is not installed (its ``order_book`` extension is what it uses for books).
Peers are installed only for the benchmark; a missing one is reported as 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

import numpy as np
import orjson

from benchmarks.report import Figure
from quant_core.book_tables import book_snapshots_table, book_updates_table
from quant_core.depth_sync import DepthBooks
from quant_dev.binance_sim.depth import DepthMarket

N = 10_000
BURST = 512
DEPTH = 20
T0 = 1_700_000_000_000


def data(n: int = N) -> tuple[list[bytes], bytes]:
    market = DepthMarket("BTCUSDT", seed=3, levels=5000, changes=40)
    first = market.frame(market.step(T0))
    snapshot = market.snapshot()
    frames = [first] + [market.frame(market.step(T0 + 100 * k)) for k in range(1, n + 1)]
    return frames, snapshot


def synced(frames: list[bytes], snapshot: bytes) -> DepthBooks:
    books = DepthBooks(["BTCUSDT"], depth=DEPTH, interval_ms=1000)
    books.on_connect()
    books.on_frames(frames[:1])
    books.on_snapshot("BTCUSDT", 1, snapshot)
    books.take()
    return books


def ours(frames: list[bytes], snapshot: bytes, tables: bool = False) -> int:
    """With ``tables``, each burst's output also becomes the ``book_updates`` and
    ``book_snapshots`` Arrow tables the warehouse sink inserts."""
    books = synced(frames, snapshot)
    for pos in range(1, len(frames), BURST):
        books.on_frames(frames[pos : pos + BURST])
        out = books.take()
        if tables:
            recv = np.full(len(out.updates["price"]), T0 * 10**6, dtype=np.int64)
            book_updates_table(out.symbols, out.updates, recv, "binance")
            book_snapshots_table(out.snapshots, "binance")
    assert not books.faults, books.faults
    return books.rows


def decoded(frames: list[bytes], snapshot: bytes):
    """The diffs as decoded bursts (ours) and as int lists (for the peers' books)."""
    books = synced(frames, snapshot)
    batches = [books.decoder.decode(frames[p : p + BURST]) for p in range(1, len(frames), BURST)]
    diffs = []
    for b in batches:
        price, qty = b.price.tolist(), b.qty.tolist()
        start, mid = b.start.tolist(), b.mid.tolist()
        for i, ts in enumerate(b.ts.tolist()):
            s, m, e = start[i], mid[i], start[i + 1]
            diffs.append((ts, price[s:m], qty[s:m], price[m:e], qty[m:e]))
    return batches, diffs


def ours_apply(frames: list[bytes], snapshot: bytes, batches) -> int:
    books = synced(frames, snapshot)
    for batch in batches:
        books.on_batch(batch)
        books.take()
    return books.rows


def rest_levels(snapshot: bytes, convert) -> tuple[list, list]:
    body = orjson.loads(snapshot)
    return (
        [(convert(p), convert(q)) for p, q in body["bids"]],
        [(convert(p), convert(q)) for p, q in body["asks"]],
    )


def sorted_dict_apply(snapshot: bytes, diffs) -> int:
    from sortedcontainers import SortedDict

    from quant_core.decode import scaled

    bids_l, asks_l = rest_levels(snapshot, scaled)
    bids, asks = SortedDict(bids_l), SortedDict(asks_l)
    due, n = 0, 0
    for ts, bp, bq, ap, aq in diffs:
        if ts >= due:
            sorted_dict_top(bids, asks)
            due = ts - ts % 1000 + 1000
        for side, prices, qtys in ((bids, bp, bq), (asks, ap, aq)):
            for p, q in zip(prices, qtys, strict=True):
                if q:
                    side[p] = q
                else:
                    side.pop(p, None)
        n += len(bp) + len(ap)
    return n


def sorted_dict_top(bids, asks) -> tuple[list, list]:
    top_b = bids.keys()[-DEPTH:][::-1]
    top_a = asks.keys()[:DEPTH]
    return [(p, bids[p]) for p in top_b], [(p, asks[p]) for p in top_a]


def sorted_dict_path(frames: list[bytes], snapshot: bytes) -> int:
    """A sorted-dict Python book end to end: orjson, exact ints, ``SortedDict``."""
    from sortedcontainers import SortedDict

    from quant_core.decode import scaled

    bids_l, asks_l = rest_levels(snapshot, scaled)
    bids, asks = SortedDict(bids_l), SortedDict(asks_l)
    due, n = 0, 0
    for raw in frames[1:]:
        d = orjson.loads(raw)["data"]
        ts = d["E"]
        if ts >= due:
            sorted_dict_top(bids, asks)
            due = ts - ts % 1000 + 1000
        for side, levels in ((bids, d["b"]), (asks, d["a"])):
            for p, q in levels:
                price, qty = scaled(p), scaled(q)
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)
            n += len(levels)
    return n


def order_book_apply(snapshot: bytes, diffs) -> int:
    from order_book import OrderBook

    from quant_core.decode import scaled

    ob = OrderBook()
    bids_l, asks_l = rest_levels(snapshot, scaled)
    for p, q in bids_l:
        ob.bids[p] = q
    for p, q in asks_l:
        ob.asks[p] = q
    due, n = 0, 0
    for ts, bp, bq, ap, aq in diffs:
        if ts >= due:
            top_n(ob)
            due = ts - ts % 1000 + 1000
        for side, prices, qtys in ((ob.bids, bp, bq), (ob.asks, ap, aq)):
            for p, q in zip(prices, qtys, strict=True):
                if q:
                    side[p] = q
                elif p in side:
                    del side[p]
        n += len(bp) + len(ap)
    return n


def top_n(ob) -> tuple[list, list]:
    """Top 20 a side from order_book (its ``index(i)`` walks from the best)."""
    nb, na = min(DEPTH, len(ob.bids)), min(DEPTH, len(ob.asks))
    return [ob.bids.index(i) for i in range(nb)], [ob.asks.index(i) for i in range(na)]


def cryptofeed_path(frames: list[bytes], snapshot: bytes) -> int:
    """What cryptofeed does per frame: orjson, Decimal prices, order_book, top-N per second."""
    from order_book import OrderBook

    ob = OrderBook()
    bids_l, asks_l = rest_levels(snapshot, Decimal)
    for p, q in bids_l:
        ob.bids[p] = q
    for p, q in asks_l:
        ob.asks[p] = q
    due, n = 0, 0
    for raw in frames[1:]:
        d = orjson.loads(raw)["data"]
        ts = d["E"]
        if ts >= due:
            top_n(ob)
            due = ts - ts % 1000 + 1000
        for side, levels in ((ob.bids, d["b"]), (ob.asks, d["a"])):
            for p, q in levels:
                price, qty = Decimal(p), Decimal(q)
                if qty:
                    side[price] = qty
                elif price in side:
                    del side[price]
            n += len(levels)
    return n


def available(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def missing(installed: bool) -> str:
    return "" if installed else " (not installed: pip install sortedcontainers order-book)"


def interleaved(works: dict[str, Callable[[], int]], repeat: int = 3) -> dict[str, float]:
    """Items per second of the fastest run of each, measured in rounds (one run of each per
    round), so that a change in the machine's load falls on ours and the peers alike."""
    best = dict.fromkeys(works, 0.0)
    for _ in range(repeat):
        for name, work in works.items():
            start = time.perf_counter()
            items = work()
            best[name] = max(best[name], items / (time.perf_counter() - start))
    return best


def run() -> list[Figure]:
    frames, snapshot = data()
    batches, diffs = decoded(frames, snapshot)
    has_ob, has_sd = available("order_book"), available("sortedcontainers")
    works = {
        "ours": lambda: ours(frames, snapshot),
        "ours_apply": lambda: ours_apply(frames, snapshot, batches),
        "ours_tables": lambda: ours(frames, snapshot, tables=True),
    }
    if has_ob:
        works["cryptofeed"] = lambda: cryptofeed_path(frames, snapshot)
        works["order_book"] = lambda: order_book_apply(snapshot, diffs)
    if has_sd:
        works["sorted_dict_path"] = lambda: sorted_dict_path(frames, snapshot)
        works["sorted_dict"] = lambda: sorted_dict_apply(snapshot, diffs)
    rate = {"cryptofeed": 0.0, "order_book": 0.0, "sorted_dict_path": 0.0, "sorted_dict": 0.0}
    rate.update(interleaved(works))
    end_to_end = "Depth frames -> exact books + top-20 every 1 s (one process)"
    book_alone = "Decoded depth diffs -> book + top-20 every 1 s"
    informational = "informational (the book alone, sync checks included in ours)"
    return [
        Figure(
            name=end_to_end,
            unit="levels/s",
            ours=rate["ours"],
            peer_name="cryptofeed: orjson + Decimal + order_book C extension" + missing(has_ob),
            peer=rate["cryptofeed"],
            goal=">= 1,000,000 level changes/s",
        ),
        Figure(
            name=end_to_end,
            unit="levels/s",
            ours=rate["ours"],
            peer_name="sorted-dict Python book: orjson + exact ints + SortedDict" + missing(has_sd),
            peer=rate["sorted_dict_path"],
            goal=">= 1,000,000 level changes/s",
        ),
        Figure(
            name=end_to_end + " + book_updates/book_snapshots Arrow tables",
            unit="levels/s",
            ours=rate["ours_tables"],
            peer_name="cryptofeed: orjson + Decimal + order_book C extension (no tables)"
            + missing(has_ob),
            peer=rate["cryptofeed"],
            goal="informational (what the live job does per burst)",
        ),
        Figure(
            name=book_alone,
            unit="levels/s",
            ours=rate["ours_apply"],
            peer_name="sortedcontainers.SortedDict, same ints" + missing(has_sd),
            peer=rate["sorted_dict"],
            goal=informational,
        ),
        Figure(
            name=book_alone,
            unit="levels/s",
            ours=rate["ours_apply"],
            peer_name="order_book C extension (cryptofeed's), same ints" + missing(has_ob),
            peer=rate["order_book"],
            goal=informational,
        ),
    ]


if __name__ == "__main__":
    for figure in run():
        print(figure.as_dict())
