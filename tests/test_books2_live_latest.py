"""A real ``quant live --streams aggTrade,bookTicker,depth`` against ``quant sim binance`` with a
reconnect, the real ClickHouse endpoint and a real ``redis-server`` (issue 16):

* the session log replays to the stored ``book_updates`` in every column, the receive time
  ``ts_init`` included, and ``quant replay verify --against-warehouse`` says so;
* the latest ``book`` in Redis, as ``/v1/latest`` reads it, is the v1 ``BookSnapshot`` of the
  last stored ``book_snapshots`` row, completeness flags included."""

from __future__ import annotations

import signal
from datetime import UTC
from decimal import Decimal
from pathlib import Path

import pytest

from quant_api import latest
from quant_core.replay import replay
from quant_dev.serving import RedisServer
from quant_resources.latest_store import LatestStore
from quant_resources.replay_check import book_updates_against_warehouse, warehouse_book_rows
from tests.live_helpers import (
    drop,
    fresh_warehouse,
    live_env,
    start_live,
    start_sim,
    verify_against_warehouse,
)
from tests.test_books_live import wait_for

pytestmark = pytest.mark.xdist_group("live")
REASONS = "SELECT groupUniqArray(reason) FROM book_resyncs"


def test_live_books_replay_with_receive_times_and_latest_book_in_redis(
    tmp_path, clickhouse_url
) -> None:
    warehouse = fresh_warehouse(clickhouse_url)
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    sim = start_sim(tmp_path / "sim", "--seed", "7")
    try:
        env = live_env(sim, warehouse, tmp_path / "home", REDIS_URL=redis.url)
        live = start_live(tmp_path, "live", env, "btcusdt", streams="aggTrade,bookTicker,depth")

        def snapshots() -> int:
            try:
                return int(warehouse.scalar("SELECT count() FROM book_snapshots"))
            except Exception:  # the table exists; a failing query means not yet
                return 0

        wait_for("the first book snapshots", lambda: snapshots() >= 3, 60, live)
        sim.request("/_sim/faults", {"trigger": "disconnect"})  # every book starts over
        wait_for(
            "a restart resync",
            lambda: (
                "restart" in warehouse.scalar("SELECT groupUniqArray(reason) FROM book_resyncs")
            ),
            60,
            live,
        )
        after = snapshots()
        wait_for("snapshots after the restart", lambda: snapshots() >= after + 3, 90, live)
        live.signal(signal.SIGINT)
        summary = live.summary(120)
        assert summary["sinks"]["redis"]["failures"] == 0
        session = Path(summary["session_dir"])

        # Every book_updates column, ts_init included, from the session log alone.
        result = replay(session)
        stored = warehouse_book_rows(warehouse, result.book_updates, "book_updates")
        assert stored.num_rows == summary["books"]["updates"] > 100
        assert book_updates_against_warehouse(warehouse, result.book_updates) is None
        verify = verify_against_warehouse(session, warehouse, env)
        assert f"{stored.num_rows} book updates" in verify.stdout

        # The latest book in Redis is the last stored snapshot, as the v1 contract.
        (last,) = warehouse.query_rows(
            "SELECT ts_event, update_id, synced_from, bid_prices, bid_qtys, ask_prices, "
            "ask_qtys, bids_complete, asks_complete FROM book_snapshots FINAL "
            "WHERE symbol = 'BTCUSDT' ORDER BY ts_event DESC, update_id DESC LIMIT 1"
        )
        ts, update_id, synced_from, bp, bq, ap, aq, bids_complete, asks_complete = last
        ts = ts.replace(tzinfo=UTC)  # the column is UTC; the client returns it naive
        book = latest.from_redis(LatestStore(redis.url), "binance", "BTCUSDT")["book"]
        assert (book.ts_event, book.update_id, book.synced_from) == (ts, update_id, synced_from)
        assert [(lv.price, lv.qty) for lv in book.bids] == list(zip(bp, bq, strict=True))
        assert [(lv.price, lv.qty) for lv in book.asks] == list(zip(ap, aq, strict=True))
        assert (book.bids_complete, book.asks_complete) == (bids_complete, asks_complete)
        assert len(book.bids) == 20 and isinstance(book.bids[0].price, Decimal)
    finally:
        sim.stop()
        redis.stop()
        drop(warehouse)
