"""Local order books from Binance depth diffs: the book against a reference dict book, the sync
procedure against a seeded exchange (quant_dev.binance_sim.depth) under faults, an independent
rebuild of every emitted snapshot from the emitted rows plus the REST answers, replay
determinism, bad input, and the real captured depth frames."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from quant_core.book import OrderBook
from quant_core.decode import (
    BAD_FIELD,
    BAD_NUMBER,
    CROSSED_BOOK,
    MALFORMED_JSON,
    MISSING_FIELD,
    UNKNOWN_STREAM,
    UNSUBSCRIBED_SYMBOL,
    UNSUPPORTED_EVENT,
)
from quant_core.depth_decode import (
    DepthDecoder,
    DepthSnapshotError,
    decode_depth_snapshot,
)
from quant_core.depth_sync import (
    BAD_SNAPSHOT,
    CROSSED,
    DEPTH_SNAPSHOT_WEIGHT,
    GAP,
    IN_SYNC,
    RESTART,
    STALE_SNAPSHOT,
    WAITING,
    BookOutput,
    DepthBooks,
    depth_weight,
)
from quant_core.formats.binance import FrameError, parse_combined_frame
from quant_dev.binance_sim.depth import DepthMarket
from quant_dev.binance_sim.market import SCALE

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples" / "binance_ws_cryptofeed"
T0 = 1_700_000_000_000


# -- the book against a reference dict book -------------------------------------------------
levels = st.lists(
    st.tuples(st.integers(1, 60), st.sampled_from([0, 0, 1, 2, 3, 10**12])), max_size=12
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(levels, levels), max_size=30), st.integers(1, 8))
def test_book_equals_reference_dict_book(diffs, n) -> None:
    book = OrderBook()
    ref: tuple[dict[int, int], dict[int, int]] = ({}, {})
    for bids, asks in diffs:
        for side, changes in ((book.bids, bids), (book.asks, asks)):
            side.apply([p for p, _ in changes], [q for _, q in changes])
        for r, changes in zip(ref, (bids, asks), strict=True):
            for p, q in changes:
                if q:
                    r[p] = q
                else:
                    r.pop(p, None)
        bp, bq, ap, aq, bids_known, asks_known = book.top(n)
        want_b = sorted(ref[0].items(), reverse=True)[:n]
        want_a = sorted(ref[1].items())[:n]
        assert list(zip(bp, bq, strict=True)) == want_b
        assert list(zip(ap, aq, strict=True)) == want_a
        assert book.bids.levels == ref[0] and book.asks.levels == ref[1]
        assert bids_known and asks_known  # no snapshot bound: the whole (empty-started) book
        assert book.crossed() == bool(ref[0] and ref[1] and max(ref[0]) >= min(ref[1]))


def test_snapshot_bounds_mark_levels_beyond_it_unknown() -> None:
    book = OrderBook()
    book.load([100, 99, 98], [1, 1, 1], [101, 102, 103], [1, 1, 1], limit=3)
    assert book.top(3)[4:] == (True, True)
    assert book.top(4)[4:] == (False, False)  # a 4th level may exist beyond what REST gave
    book.bids.apply([100], [0])  # the top moved: the 3rd bid is now below the known range
    book.bids.apply([90], [5])
    assert book.top(3)[4:] == (False, True)
    book.load([100], [1], [101], [1], limit=5000)  # fewer levels than asked: the whole side
    assert book.top(20)[4:] == (True, True)


# -- a seeded exchange and a driver that records what it fed --------------------------------
@dataclass
class Collected:
    updates: dict[str, list[np.ndarray]] = field(default_factory=dict)
    snapshots: list = field(default_factory=list)
    resyncs: list = field(default_factory=list)
    synced: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)

    def add(self, out: BookOutput) -> None:
        for name, col in out.updates.items():
            self.updates.setdefault(name, []).append(col)
        self.snapshots += out.snapshots
        self.resyncs += out.resyncs
        self.synced += out.synced
        self.requests += out.requests
        self.symbols = out.symbols

    def rows(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(cols) for name, cols in self.updates.items()}

    def as_builtins(self):
        return (
            {k: v.tolist() for k, v in self.rows().items()},
            self.snapshots,
            self.resyncs,
            self.synced,
            self.requests,
        )


class Session:
    """The exchange (one ``DepthMarket`` per symbol) and a driver in one: every input it
    hands the books is recorded, and the truth (each market's top N after each update id)
    is kept to check snapshots against."""

    def __init__(self, symbols=("BTCUSDT",), depth=5, limit=5000, levels=40, seed=1) -> None:
        self.markets = {
            s: DepthMarket(s, seed=seed, mid=(1000 + 10 * k) * SCALE, levels=levels, changes=5)
            for k, s in enumerate(symbols)
        }
        self.depth = depth
        self.books = DepthBooks(symbols, depth=depth, interval_ms=1000, limit=limit)
        self.inputs: list[tuple] = []
        self.got = Collected()
        self.ts = T0
        self.truth: dict[tuple[str, int], tuple] = {}
        self.answered = 0
        for s, m in self.markets.items():
            self.truth[(s, m.update_id)] = self._top(m)

    def feed(self, item: tuple) -> None:
        self.inputs.append(item)
        self.books.feed(item)
        self.got.add(self.books.take())

    def _top(self, m: DepthMarket) -> tuple:
        bids = sorted(m.bids.items(), reverse=True)[: self.depth]
        asks = sorted(m.asks.items())[: self.depth]
        return (
            tuple(p for p, _ in bids),
            tuple(q for _, q in bids),
            tuple(p for p, _ in asks),
            tuple(q for _, q in asks),
        )

    def step(self, symbol: str | None = None) -> bytes:
        """One diff of one market (100 ms later), as a frame (not fed)."""
        self.ts += 100
        m = self.markets[symbol or next(iter(self.markets))]
        frame = m.frame(m.step(self.ts))
        self.truth[(m.symbol, m.update_id)] = self._top(m)
        return frame

    def run(self, n: int) -> None:
        for _ in range(n):
            self.feed(("frames", [self.step(s) for s in self.markets]))

    def open_requests(self) -> list:
        return self.got.requests[self.answered :]

    def answer(self, body: bytes | None = None) -> None:
        """Answer every request not answered yet with the book as it stands (or ``body``)."""
        for req in self.open_requests():
            self.answered += 1
            snap = body if body is not None else self.markets[req.symbol].snapshot(req.limit)
            self.feed(("snapshot", req.symbol, req.request_id, snap))

    def check(self) -> None:
        """Every snapshot is the exchange's book at its update id, and rebuilds from rows."""
        for snap in self.got.snapshots:
            bp, bq, ap, aq = self.truth[(snap.symbol, snap.update_id)]
            if snap.bids_known:
                assert (snap.bid_price, snap.bid_qty) == (bp, bq), snap
            if snap.asks_known:
                assert (snap.ask_price, snap.ask_qty) == (ap, aq), snap
        rebuild_every_snapshot(self.inputs, self.got)


def rebuild_every_snapshot(inputs: list[tuple], got: Collected) -> int:
    """From the emitted rows and the REST answers alone, rebuild each emitted snapshot."""
    bodies = {}
    for item in inputs:
        if item[0] == "snapshot":
            try:
                snap = decode_depth_snapshot(item[3])
            except DepthSnapshotError:
                continue
            bodies[(item[1], snap.last_update_id)] = snap
    rows = got.rows() if got.updates else {}
    for shot in got.snapshots:
        sync = [
            s
            for s in got.synced
            if s.symbol == shot.symbol and s.synced_from == shot.synced_from and s.row <= shot.row
        ][-1]
        rest = bodies[(shot.symbol, shot.synced_from)]
        book = (
            dict(zip(rest.bid_price, rest.bid_qty, strict=True)),
            dict(zip(rest.ask_price, rest.ask_qty, strict=True)),
        )
        code = got.symbols.index(shot.symbol)
        for k in range(sync.row, shot.row):
            if rows["symbol"][k] != code:
                continue
            side, p, q = int(rows["side"][k]), int(rows["price"][k]), int(rows["qty"][k])
            assert sync.synced_from < rows["last_update_id"][k] <= shot.update_id
            if q:
                book[side][p] = q
            else:
                book[side].pop(p, None)
        bids = sorted(book[0].items(), reverse=True)[: len(shot.bid_price) or 1]
        asks = sorted(book[1].items())[: len(shot.ask_price) or 1]
        assert tuple(p for p, _ in bids) == shot.bid_price
        assert tuple(q for _, q in bids) == shot.bid_qty
        assert tuple(p for p, _ in asks) == shot.ask_price
        assert tuple(q for _, q in asks) == shot.ask_qty
    return len(got.snapshots)


def replayed(inputs: list[tuple], symbols, depth=5, limit=5000):
    books = DepthBooks(symbols, depth=depth, interval_ms=1000, limit=limit)
    got = Collected()
    for item in inputs:
        books.feed(item)
        got.add(books.take())
    return got


# -- the sync procedure ---------------------------------------------------------------------
def test_binance_procedure_syncs_and_snapshots_every_second() -> None:
    s = Session()
    s.feed(("connect",))
    s.run(3)
    assert [r.request_id for r in s.got.requests] == [1]  # one request, on the first diff
    assert s.got.requests[0].weight == DEPTH_SNAPSHOT_WEIGHT == depth_weight(5000)
    assert s.books.states["BTCUSDT"].state == WAITING
    s.answer()  # the book as of 3 diffs in: those diffs are dropped
    assert s.got.synced[0].dropped == 3
    assert s.books.states["BTCUSDT"].state == IN_SYNC
    s.run(50)
    assert s.got.resyncs == []
    # One right after the sync, then one per second of exchange time (diffs every 100 ms).
    assert len(s.got.snapshots) == 1 + 5
    ts = [snap.ts_event for snap in s.got.snapshots[1:]]
    assert all(t % 1000 == 0 for t in ts) and ts == sorted(set(ts))
    assert all(snap.bids_known and snap.asks_known for snap in s.got.snapshots)
    assert len(s.got.rows()["price"]) > 0
    s.check()


def test_snapshot_older_than_first_buffered_diff_is_fetched_again() -> None:
    s = Session()
    s.feed(("connect",))
    old = s.markets["BTCUSDT"].snapshot()  # taken before the first diff the stream sends
    s.run(2)
    s.answer(old)
    assert [r.reason for r in s.got.resyncs] == [STALE_SNAPSHOT]
    assert len(s.got.requests) == 2 and s.got.snapshots == []
    s.run(2)
    s.answer()
    s.run(20)
    assert s.books.states["BTCUSDT"].state == IN_SYNC and len(s.got.snapshots) >= 2
    s.check()


def test_missing_diff_puts_the_book_out_of_sync_and_resyncs() -> None:
    s = Session()
    s.feed(("connect",))
    s.run(2)
    s.answer()
    s.run(12)
    s.step()  # this diff never arrives
    s.run(1)
    [gap] = s.got.resyncs
    assert gap.reason == GAP and gap.first
    assert gap.next_update_id > gap.update_id + 1
    assert s.books.states["BTCUSDT"].state == WAITING
    n_snaps = len(s.got.snapshots)
    s.run(15)  # no snapshot while out of sync
    assert len(s.got.snapshots) == n_snaps
    s.answer()
    s.run(12)
    assert s.books.states["BTCUSDT"].state == IN_SYNC and len(s.got.snapshots) > n_snaps
    assert s.got.synced[-1].synced_from > gap.update_id
    s.check()


def test_reconnect_in_the_middle_of_a_sync() -> None:
    s = Session()
    s.feed(("connect",))
    s.run(2)
    late = s.markets["BTCUSDT"].snapshot()
    pending = s.open_requests()
    s.feed(("connect",))  # the stream restarts before the REST answer is in
    assert [r.reason for r in s.got.resyncs] == [RESTART]
    s.answered += len(pending)
    s.feed(("snapshot", "BTCUSDT", pending[0].request_id, late))  # answers a dead request
    assert s.books.ignored_answers == 1 and s.got.synced == []
    s.step()  # lost in the reconnect
    s.run(3)
    assert [r.request_id for r in s.open_requests()] == [2]
    s.answer()
    s.run(15)
    assert s.books.states["BTCUSDT"].state == IN_SYNC and s.got.snapshots
    s.check()


def crossing_frame(s: Session) -> bytes:
    """A diff from the exchange whose bid is at the best ask: a book no exchange state has."""
    m = s.markets["BTCUSDT"]
    m.update_id += 1
    s.truth[("BTCUSDT", m.update_id)] = s.truth[("BTCUSDT", m.update_id - 1)]
    return m.frame((m.update_id, m.update_id, s.ts, [(m.best_ask(), 5 * SCALE)], []))


def test_crossed_book_is_a_fault_and_never_a_snapshot() -> None:
    s = Session()
    s.feed(("connect",))
    s.run(1)
    s.answer()
    s.run(5)
    s.feed(("frames", [crossing_frame(s)]))
    [fault] = s.got.resyncs
    assert fault.reason == CROSSED and fault.first and s.books.faults[CROSSED] == 1
    n_snaps = len(s.got.snapshots)
    s.run(1)
    crossed_rest = b'{"lastUpdateId":9,"bids":[["2.0","1"]],"asks":[["2.0","1"]]}'
    s.answer(crossed_rest)  # the same episode: recorded, but not as its first record
    assert [(r.reason, r.first) for r in s.got.resyncs] == [(CROSSED, True), (BAD_SNAPSHOT, False)]
    assert len(s.got.snapshots) == n_snaps
    s.run(2)
    s.answer()
    s.run(12)
    assert len(s.got.snapshots) > n_snaps
    for snap in s.got.snapshots:
        assert snap.bid_price[0] < snap.ask_price[0]
    s.check()


def test_duplicate_and_out_of_order_diffs() -> None:
    s = Session()
    s.feed(("connect",))
    s.run(1)
    s.answer()
    s.run(3)
    a, b = s.step(), s.step()
    s.feed(("frames", [a, a]))  # a duplicate repeats what the book holds: skipped
    assert s.books.skipped_diffs == 1 and s.got.resyncs == []
    s.feed(("frames", [b, a]))  # an old one after its successor: skipped too
    assert s.books.skipped_diffs == 2 and s.got.resyncs == []
    c, d = s.step(), s.step()
    s.feed(("frames", [d, c]))  # a successor before its predecessor: a gap, then buffered
    assert [r.reason for r in s.got.resyncs] == [GAP]
    s.answer()
    s.run(12)
    assert s.books.states["BTCUSDT"].state == IN_SYNC
    s.check()


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"not json", MALFORMED_JSON),
        (b'{"bids":[],"asks":[]}', MISSING_FIELD),
        (b'{"lastUpdateId":"7","bids":[],"asks":[]}', BAD_NUMBER),
        (b'{"lastUpdateId":7,"bids":[["1.0","x"]],"asks":[]}', BAD_NUMBER),
        (b'{"lastUpdateId":7,"bids":[["1.0","-1"]],"asks":[]}', BAD_NUMBER),
        (b'{"lastUpdateId":7,"bids":[["1.0","0"]],"asks":[]}', BAD_NUMBER),
        (b'{"lastUpdateId":7,"bids":[["1.0","1"],["2.0","1"]],"asks":[]}', BAD_FIELD),
        (b'{"lastUpdateId":7,"bids":[["1.0","1"],["1.0","2"]],"asks":[]}', BAD_FIELD),
        (b'{"lastUpdateId":7,"bids":[],"asks":[["2.0","1"],["1.0","1"]]}', BAD_FIELD),
        (b'{"lastUpdateId":7,"bids":[["2.0","1"]],"asks":[["2.0","1"]]}', CROSSED_BOOK),
        (b'{"lastUpdateId":7,"bids":[["1.0","1",3]],"asks":[]}', BAD_NUMBER),
    ],
)
def test_bad_snapshot_is_refused_whole_and_fetched_again(body: bytes, kind: str) -> None:
    with pytest.raises(DepthSnapshotError) as err:
        decode_depth_snapshot(body)
    assert err.value.kind == kind
    s = Session()
    s.feed(("connect",))
    s.run(2)
    s.answer(body)
    assert s.books.snapshot_rejects == {kind: 1}
    assert [r.reason for r in s.got.resyncs] == [BAD_SNAPSHOT]
    assert s.books.states["BTCUSDT"].state == WAITING and len(s.got.requests) == 2
    s.answer()
    s.run(12)
    assert s.books.states["BTCUSDT"].state == IN_SYNC
    s.check()


def diff_frame(symbol="BTCUSDT", U=1, u=1, b=(("1.00000000", "1.00000000"),), a=(), **data):
    body = {"e": "depthUpdate", "E": T0, "s": symbol, "U": U, "u": u, "b": b, "a": a, **data}
    return orjson.dumps({"stream": f"{symbol.lower()}@depth@100ms", "data": body})


BAD_FRAMES = [
    (b"{oops", MALFORMED_JSON),
    (b"[1]", MALFORMED_JSON),
    (b'{"stream":"x","data":{}}', UNKNOWN_STREAM),
    (b'{"stream":"btcusdt@kline_1m","data":{}}', UNSUPPORTED_EVENT),
    (b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate"}}', MISSING_FIELD),
    (diff_frame(e="trade"), UNSUPPORTED_EVENT),
    (diff_frame(symbol="ETHUSDT"), UNSUBSCRIBED_SYMBOL),
    (diff_frame(symbol="btc usdt"), BAD_FIELD),
    (diff_frame(U=5, u=4), BAD_NUMBER),
    (diff_frame(U=-1), BAD_NUMBER),
    (diff_frame(b=(("1.00000000", "-1.00000000"),)), BAD_NUMBER),
    (diff_frame(b=(("1.00000000", "NaN"),)), BAD_NUMBER),
    (diff_frame(b=(("abc", "1.00000000"),)), BAD_NUMBER),
    (diff_frame(b=(("0.00000000", "1.00000000"),)), BAD_NUMBER),
    (diff_frame(b=(("1.000000001", "1.00000000"),)), BAD_NUMBER),
    (diff_frame(b=((1.5, "1.00000000"),)), BAD_NUMBER),
    (diff_frame(b=(("1.0", "2.0", "3.0"),)), BAD_NUMBER),
    (diff_frame(a=(("9" * 30, "1.00000000"),)), BAD_NUMBER),
]


@pytest.mark.parametrize(("raw", "kind"), BAD_FRAMES)
def test_bad_diff_is_rejected_by_kind(raw: bytes, kind: str) -> None:
    dec = DepthDecoder(["BTCUSDT"])
    good = diff_frame(U=2, u=3, b=(("2.50000000", "0.00000000"), ("2.4", "7")))
    batch = dec.decode([good, raw, good])
    assert dec.rejects == {kind: 1} and dec.samples[kind] == raw
    assert batch.index.tolist() == [0, 2]
    assert batch.price.tolist() == [250_000_000, 240_000_000] * 2
    assert batch.qty.tolist() == [0, 700_000_000] * 2


def test_bad_diff_of_a_subscribed_symbol_leads_to_a_resync_and_no_bad_level() -> None:
    s = Session()
    s.feed(("connect",))
    s.run(1)
    s.answer()
    s.run(3)
    m = s.markets["BTCUSDT"]
    bad = re.sub(rb'"E":\d+', b'"E":-1', s.step())  # a negative time: the diff is refused
    s.feed(("frames", [bad, b"{oops", diff_frame(symbol="ETHUSDT")]))
    assert s.books.decoder.rejects == {BAD_NUMBER: 1, MALFORMED_JSON: 1, UNSUBSCRIBED_SYMBOL: 1}
    s.run(1)
    assert [r.reason for r in s.got.resyncs] == [GAP]  # its update ids are missing
    s.answer()
    s.run(12)
    book = s.books.states["BTCUSDT"].book
    assert all(q > 0 for q in book.bids.levels.values()) and min(book.bids.levels) > 0
    assert book.bids.levels == {p: q for p, q in m.bids.items() if p in book.bids.levels}
    s.check()


def test_depth1s_stream_and_decimal_forms_decode_exactly() -> None:
    dec = DepthDecoder(["BTCUSDT"])
    raw = orjson.dumps(
        {
            "stream": "btcusdt@depth",
            "data": {"e": "depthUpdate", "E": T0, "s": "BTCUSDT", "U": 1, "u": 2,
                     "b": [["0.0024", "10"]], "a": [["0.0026", "100.5"]]},
        }
    )  # fmt: skip
    batch = dec.decode([raw])
    assert dec.rejects == {}
    assert batch.price.tolist() == [240_000, 260_000]
    assert batch.qty.tolist() == [10 * SCALE, 10_050_000_000]
    assert (batch.start.tolist(), batch.mid.tolist()) == ([0, 2], [1])


# -- faults at random: snapshots true, rebuild identical, replay identical -------------------
ACTIONS = ["diff", "diff", "diff", "diff", "drop", "dup", "swap", "answer", "stale", "connect"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(ACTIONS), min_size=10, max_size=120), st.integers(0, 2**16))
def test_random_faults_never_give_a_wrong_snapshot(actions: list[str], seed: int) -> None:
    s = Session(symbols=("BTCUSDT", "ETHUSDT"), limit=5000, seed=seed)
    rng = random.Random(seed)
    s.feed(("connect",))
    stale = {sym: m.snapshot() for sym, m in s.markets.items()}
    for action in [*actions, "answer", *(["diff"] * 12)]:
        sym = rng.choice(list(s.markets))
        if action == "diff":
            s.feed(("frames", [s.step(x) for x in s.markets]))
        elif action == "drop":
            s.step(sym)
        elif action == "dup":
            f = s.step(sym)
            s.feed(("frames", [f, f]))
        elif action == "swap":
            a, b = s.step(sym), s.step(sym)
            s.feed(("frames", [b, a]))
        elif action == "answer":
            s.answer()
        elif action == "stale":
            for req in s.open_requests():
                s.answered += 1
                s.feed(("snapshot", req.symbol, req.request_id, stale[req.symbol]))
            stale = {x: m.snapshot() for x, m in s.markets.items()}
        elif action == "connect":
            s.feed(("connect",))
            s.answered = len(s.got.requests)
    s.check()
    again = replayed(s.inputs, ("BTCUSDT", "ETHUSDT"))
    assert again.as_builtins() == s.got.as_builtins()


def test_known_flags_with_a_small_rest_limit() -> None:
    s = Session(limit=8, levels=40)  # REST gives 8 of 40 levels a side
    s.feed(("connect",))
    s.run(1)
    s.answer()
    s.run(60)
    s.check()  # levels flagged known equal the exchange's
    assert s.books.states["BTCUSDT"].book.bid_bound > 0


def test_replay_of_recorded_inputs_is_identical() -> None:
    s = Session(symbols=("BTCUSDT", "ETHUSDT"))
    s.feed(("connect",))
    s.run(3)
    s.answer()
    s.run(20)
    s.step("ETHUSDT")
    s.run(3)
    s.answer()
    s.run(15)
    first = replayed(s.inputs, ("BTCUSDT", "ETHUSDT"))
    second = replayed(s.inputs, ("BTCUSDT", "ETHUSDT"))
    assert first.as_builtins() == second.as_builtins() == s.got.as_builtins()
    assert len(first.snapshots) > 4 and rebuild_every_snapshot(s.inputs, first) > 4


# -- the real capture ----------------------------------------------------------------------
@pytest.mark.samples
@pytest.mark.skipif(not SAMPLES.is_dir(), reason="../shared/samples is absent")
def test_real_depth_frames_decode_exactly_and_apply() -> None:
    """What this proves: every real depth frame of the capture decodes (no reject) to exactly
    the numbers a Decimal reading gives, its update ids are contiguous per symbol (so the
    sync machine applies every one without a resync), and the rows emitted are the frames'
    levels in order. The capture has no REST answer: each book starts from a synthetic empty
    snapshot at the first ``U`` (the lowest id Binance's rule accepts), so it holds only the
    levels the diffs touched (what a client knows of levels it has seen change), not the
    exchange's whole book; its snapshots are not checked against anything."""
    lines = (SAMPLES / "BINANCE.ws.1.0").read_bytes().splitlines()
    frames = [ln.split(b": ", 1)[1] for ln in lines if b"@depth" in ln.split(b": ", 1)[-1][:40]]
    assert len(frames) > 100
    symbols = sorted({orjson.loads(f)["data"]["s"] for f in frames})
    books = DepthBooks(symbols, depth=10)
    books.on_connect()
    firsts: dict[str, int] = {}
    for f in frames:
        d = orjson.loads(f)["data"]
        firsts.setdefault(d["s"], d["U"])
    books.on_frames(frames)
    got = Collected()
    got.add(books.take())
    assert books.decoder.rejects == {}
    empty = orjson.dumps({"lastUpdateId": 0, "bids": [], "asks": []})
    for req in got.requests:
        body = empty.replace(b":0,", f":{firsts[req.symbol]},".encode())
        books.on_snapshot(req.symbol, req.request_id, body)
    got.add(books.take())
    assert got.resyncs == [] and books.faults == {}
    assert all(books.states[s].state == IN_SYNC for s in symbols)
    rows = got.rows()
    for symbol in symbols:  # each book applied its buffered diffs in order when it synced
        data = [d for d in map(orjson.loads, frames) if d["data"]["s"] == symbol]
        data = [d["data"] for d in data if d["data"]["u"] > firsts[symbol]]  # not in the REST
        want = [
            (Decimal(p) * SCALE, Decimal(q) * SCALE) for d in data for s in "ba" for p, q in d[s]
        ]
        mine = rows["symbol"] == got.symbols.index(symbol)
        assert (
            list(zip(rows["price"][mine].tolist(), rows["qty"][mine].tolist(), strict=True)) == want
        )
    assert len(got.snapshots) >= len(symbols)


def test_decoder_agrees_with_the_contracts() -> None:
    """Every diff the L2Update contract refuses is refused here; every one kept has the
    contract's values (Decimal) exactly, scaled by 10**8."""
    m = DepthMarket("BTCUSDT", levels=30, changes=6)
    frames = [m.frame(m.step(T0 + 100 * k)) for k in range(30)] + [raw for raw, _ in BAD_FRAMES]
    dec = DepthDecoder(["BTCUSDT"])
    batch = dec.decode(frames)
    kept = batch.index.tolist()
    for i, raw in enumerate(frames):
        try:
            ref = parse_combined_frame(raw)
        except (FrameError, ValidationError, ValueError):
            assert i not in kept, raw
            continue
        if i not in kept:
            continue
        row = kept.index(i)
        s, mid, e = batch.start[row], batch.mid[row], batch.start[row + 1]
        want = [(lv.price * SCALE, lv.qty * SCALE) for lv in (*ref.bids, *ref.asks)]
        got = list(zip(batch.price[s:e].tolist(), batch.qty[s:e].tolist(), strict=True))
        assert got == want and mid - s == len(ref.bids)
        assert (batch.first[row], batch.last[row]) == (ref.first_update_id, ref.last_update_id)
    assert len(kept) == 30
