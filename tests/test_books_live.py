"""Order books end to end: ``quant live --streams aggTrade,bookTicker,depth`` against ``quant sim
binance`` with every depth fault (a missing diff, stale snapshots, a reconnect while a resync
waits for its REST answer), real processes, the real ClickHouse endpoint.

Each stored snapshot is rebuilt independently: from the REST answer the session log recorded
(the one whose ``lastUpdateId`` the snapshot says it was built from) and the stored
``book_updates`` after it, and must be identical; the chain of update ids behind it must be
whole (the book was never stored out of sync); a replay of the session log rebuilds the same
``book_snapshots``."""

from __future__ import annotations

import signal
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from quant_core.book import OrderBook
from quant_core.book_tables import compare_book_snapshots
from quant_core.contracts import BookSnapshot
from quant_core.depth_decode import DEPTH_PATH, decode_depth_snapshot
from quant_core.replay import replay
from quant_core.sessionlog.format import RecordKind
from quant_core.sessionlog.reader import SessionReader
from quant_resources.replay_check import warehouse_book_rows
from tests.live_helpers import (
    drop,
    fresh_warehouse,
    live_env,
    start_live,
    start_sim,
    verify_against_warehouse,
)
from tests.test_nats import read_lines, start_tail

pytestmark = pytest.mark.xdist_group("live")
SCALE = Decimal(10**8)


def wait_for(what: str, check, timeout: float, live) -> object:
    """Poll ``check`` until it returns something truthy (a state, not a time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if live.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"never saw {what}\n{live.explain()}")
        time.sleep(0.2)


def units(value: Decimal) -> int:
    return int(value * SCALE)


def recorded_snapshots(session: Path) -> dict[tuple[str, int], object]:
    """(symbol, lastUpdateId) -> decoded REST depth answer, from the session log."""
    found = {}
    for rec in SessionReader(session).records():
        if rec.kind != RecordKind.REST:
            continue
        meta = orjson.loads(rec.meta) if rec.meta else {}
        if meta.get("path") != DEPTH_PATH:
            continue
        snap = decode_depth_snapshot(rec.payload)
        found[(meta["symbol"], snap.last_update_id)] = snap
    return found


def stored_updates(warehouse) -> dict[str, list[tuple]]:
    rows = warehouse.query_rows(
        "SELECT symbol, first_update_id, last_update_id, side, price, qty FROM book_updates "
        "FINAL WHERE source = 'binance' ORDER BY symbol, last_update_id, side, price"
    )
    by_symbol = defaultdict(list)
    for symbol, first, last, side, price, qty in rows:
        by_symbol[symbol].append((int(first), int(last), side, units(price), units(qty)))
    return by_symbol


def rebuild(rest, updates: list[tuple], synced_from: int, update_id: int, depth: int):
    """The top ``depth`` levels of the book built from ``rest`` and the stored updates in
    (synced_from, update_id]; asserts the update ids chain without a hole."""
    book = OrderBook()
    book.load(rest.bid_price, rest.bid_qty, rest.ask_price, rest.ask_qty, 5000)
    expected_first = None
    diffs: dict[tuple[int, int], list] = defaultdict(list)
    for first, last, side, price, qty in updates:
        if synced_from < last <= update_id:
            diffs[(first, last)].append((side, price, qty))
    last_u = synced_from
    for (first, last), levels in sorted(diffs.items(), key=lambda d: d[0][1]):
        if expected_first is None:
            assert first <= synced_from + 1, f"first diff {first}..{last} after {synced_from}"
        else:
            assert first == expected_first, f"hole: diff {first}..{last} after {last_u}"
        expected_first, last_u = last + 1, last
        for side, price, qty in levels:
            (book.bids if side == "bid" else book.asks).apply([price], [qty])
        assert not book.crossed()
    assert last_u == update_id, f"stored updates end at {last_u}, snapshot says {update_id}"
    bp, bq, ap, aq, _, _ = book.top(depth)
    return bp, bq, ap, aq


def test_live_books_survive_every_depth_fault_and_replay(
    tmp_path, clickhouse_url, nats_url, monkeypatch
) -> None:
    warehouse = fresh_warehouse(clickhouse_url)
    sim = start_sim(tmp_path / "sim", "--seed", "5")
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")  # the tail writes each message as it comes
    tail = start_tail(tmp_path, "books", nats_url, "v1.market.book.binance.*")
    try:
        env = live_env(sim, warehouse, tmp_path / "home", NATS_URL=nats_url)
        live = start_live(tmp_path, "live", env, "btcusdt", streams="aggTrade,bookTicker,depth")

        def count(sql: str) -> int:
            try:
                return int(warehouse.scalar(sql))
            except Exception:  # the table exists; a failing query means not yet
                return 0

        def snapshots() -> int:
            return count("SELECT count() FROM book_snapshots")

        wait_for("the first book snapshots", lambda: snapshots() >= 3, 60, live)
        # A missing diff; the resync's first answer is stale, the next one is held back for
        # 10 s, and the stream drops while the book waits for it.
        sim.request("/_sim/depth", {"drop": 1, "stale": 1, "hold": 1, "hold_s": 10})
        wait_for(
            "a held snapshot answer",
            lambda: sim.request("/_sim/depth", {})["held_snapshots"] >= 1,
            60,
            live,
        )
        sim.request("/_sim/faults", {"trigger": "disconnect"})
        reasons_sql = "SELECT groupUniqArray(reason) FROM book_resyncs"
        wait_for(
            "gap, stale_snapshot and restart resyncs",
            lambda: {"gap", "stale_snapshot", "restart"} <= set(warehouse.scalar(reasons_sql)),
            60,
            live,
        )
        after = snapshots()
        wait_for("snapshots after the restart", lambda: snapshots() >= after + 3, 90, live)
        live.signal(signal.SIGINT)
        summary = live.summary(120)
        books = summary["books"]
        assert books["rejects"] == {} and books["snapshot_rejects"] == {}
        assert {"gap", "stale_snapshot", "restart"} <= set(books["faults"])
        assert summary["sinks"]["books"]["book_snapshots"] == books["snapshots"]
        depth_stats = sim.request("/_sim/depth", {})
        assert depth_stats["diffs_dropped"] == 1 and depth_stats["stale_snapshots"] == 1

        session = Path(summary["session_dir"])
        rests = recorded_snapshots(session)
        updates = stored_updates(warehouse)
        stored = warehouse.query_rows(
            "SELECT symbol, update_id, synced_from, bid_prices, bid_qtys, ask_prices, ask_qtys "
            "FROM book_snapshots FINAL ORDER BY symbol, ts_event, update_id"
        )
        assert len(stored) == books["snapshots"] >= 6
        synced_from_values = set()
        for symbol, update_id, synced_from, bp, bq, ap, aq in stored:
            rest = rests[(symbol, int(synced_from))]  # the REST answer the log recorded
            synced_from_values.add(int(synced_from))
            mine = tuple([units(v) for v in col] for col in (bp, bq, ap, aq))
            again = rebuild(rest, updates[symbol], int(synced_from), int(update_id), 20)
            assert mine == tuple(again), f"snapshot {symbol} {update_id} differs from rebuild"
        assert len(synced_from_values) >= 2  # the first sync, and after the faults
        # The reconnect came in the middle of the resync: no progress since the gap.
        held = dict(
            warehouse.query_rows(
                "SELECT reason, min(update_id) FROM book_resyncs FINAL "
                "WHERE reason IN ('gap', 'restart') GROUP BY reason"
            )
        )
        assert held["restart"] == held["gap"], held
        # Never stored out of sync: no snapshot of an episode after the id its fault showed.
        for reason, last_id, next_id in warehouse.query_rows(
            "SELECT reason, update_id, next_update_id FROM book_resyncs FINAL "
            "WHERE reason IN ('gap', 'crossed', 'restart')"
        ):
            episode = [r for r in stored if r[2] <= last_id <= r[1]]
            assert all(int(r[1]) <= last_id for r in episode), (reason, last_id, next_id)

        # Every stored snapshot was published on NATS as the BookSnapshot contract's JSON.
        wait_for(
            "every snapshot on NATS",
            lambda: len(read_lines(tmp_path / "books.jsonl")) >= len(stored),
            30,
            live,
        )
        published = [
            BookSnapshot.model_validate(line["data"])
            for line in read_lines(tmp_path / "books.jsonl")
        ]
        assert {line["subject"] for line in read_lines(tmp_path / "books.jsonl")} == {
            "v1.market.book.binance.BTCUSDT"
        }
        assert sorted(m.update_id for m in published) == sorted(int(r[1]) for r in stored)
        by_id = {int(r[1]): r for r in stored}
        for m in published:
            row = by_id[m.update_id]
            assert [lv.price for lv in m.bids] == list(row[3]) and m.synced_from == row[2]

        # The session log replays to the same snapshots, also through the CLI.
        result = replay(session)
        assert result.book_snapshots.num_rows == len(stored)
        assert (
            compare_book_snapshots(
                warehouse_book_rows(warehouse, result.book_snapshots, "book_snapshots"),
                result.book_snapshots,
            )
            is None
        )
        verify = verify_against_warehouse(session, warehouse, env)
        assert "book snapshots" in verify.stdout
    finally:
        tail.stop(10)
        sim.stop()
        drop(warehouse)
