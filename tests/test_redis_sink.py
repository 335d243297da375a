"""``quant live`` with ``REDIS_URL``: the latest values and the stream of final bars in Redis.

Real processes: the Binance simulator (with faults), ``quant live``, a private ``redis-server``
(password required; stopped and restarted for the outage test), the ClickHouse endpoint of the
test services and ``quant serve api``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pyarrow as pa
import pytest
import redis

from quant_api import latest
from quant_api.bars import COLUMNS_1M
from quant_core.contracts import Bar, Trade
from quant_dev.processes import free_port
from quant_dev.serving import ApiServer, RedisServer
from quant_resources.latest_store import LatestStore, bars_stream_key, latest_key
from quant_resources.live.redis_sink import RedisSink
from quant_resources.live.sinks import trade_columns_table
from tests.live_helpers import (
    check_trades,
    drop,
    fresh_warehouse,
    live_env,
    seconds_to_minute_end,
    start_live,
    start_sim,
    stop_all,
    tail,
)

pytestmark = pytest.mark.xdist_group("live")
SYMBOLS = ("BTCUSDT", "ETHUSDT")
KINDS = {"trade", "book_ticker", "bar"}


@pytest.fixture
def private_redis(tmp_path):
    # serve: no persistence, so a restart is the empty Redis whose refill these tests check
    server = RedisServer(tmp_path / "redis", persist=False)
    server.start()
    yield server
    server.stop()


def wait_for(what: str, check, timeout_s: float = 60.0, proc=None):
    """Poll ``check`` until it returns a true value (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"quant live exited while waiting for {what}\n{proc.explain()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def assert_latest_equal_warehouse(store: LatestStore, warehouse, kinds=KINDS) -> None:
    for symbol in SYMBOLS:
        cached = latest.from_redis(store, "binance", symbol)
        stored = latest.from_warehouse(warehouse, "binance", symbol, list(latest.WAREHOUSE_KINDS))
        assert set(stored) >= kinds, f"{symbol}: the warehouse has only {sorted(stored)}"
        assert set(cached) == set(stored), f"{symbol}: redis has {sorted(cached)}"
        for kind in stored:
            assert cached[kind] == stored[kind], (
                f"{symbol} {kind}: redis has {cached[kind]!r}, ClickHouse {stored[kind]!r}"
            )


def stream_bars(client: redis.Redis) -> dict[tuple[str, object], Bar]:
    """The highest version of every (symbol, minute) in the stream of final 1m bars."""
    best: dict[tuple[str, object], tuple[int, Bar]] = {}
    for _, fields in client.xrange(bars_stream_key("binance", "1m")):
        bar = Bar.model_validate_json(fields[b"bar"])
        version = int(fields[b"version"])
        assert fields[b"symbol"].decode() == bar.symbol
        key = (bar.symbol, bar.ts_event)
        if key not in best or version > best[key][0]:
            best[key] = (version, bar)
    return {key: bar for key, (_, bar) in best.items()}


def test_live_run_with_faults_keeps_latest_values_and_bar_stream(
    tmp_path: Path, clickhouse_url, private_redis
) -> None:
    warehouse = fresh_warehouse(clickhouse_url)
    store = LatestStore(private_redis.url)
    api = None
    try:
        sim = start_sim(
            tmp_path,
            *("--rate", "200", "--seed", "41", "--symbols", "btcusdt,ethusdt"),
            *("--faults", "disconnect:2,malformed:3,duplicate:3,reorder:2"),
            minute_in=15,  # a minute boundary about 15 s after `quant live` starts
        )
        # Stop 1 s after a minute boundary: the clean stop writes that minute's bars.
        wait = seconds_to_minute_end(sim.now())
        duration = (wait if wait >= 10 else wait + 60) + 1.0
        env = live_env(sim, warehouse, tmp_path / "home", REDIS_URL=private_redis.url)
        live = start_live(tmp_path, "live", env, "btcusdt,ethusdt", duration)
        # The data service starts (imports, binds) while the live run goes on; it is asked only
        # after the run.
        api_env = {"CLICKHOUSE_URL": warehouse.resolved_url, "REDIS_URL": private_redis.url}
        api = ApiServer(tmp_path / "api", free_port(), api_env).start()
        summary = live.summary(duration + 120)
        sim.pause()
        stats = sim.stats()
    except BaseException:
        for name in ("live.stderr", "sim.stderr"):
            print(f"--- {name} ---\n{tail(tmp_path / name)}")
        stop_all()
        if api is not None:
            api.stop()
        drop(warehouse)
        raise
    stop_all()
    try:
        assert stats["faults"]["disconnect"] == 2 and stats["faults"]["malformed"] == 3, stats
        assert summary["rejects"], summary  # the malformed frames were seen and refused
        redis_stats = summary["sinks"]["redis"]
        assert redis_stats["failures"] == 0 and redis_stats["pending"] == 0, summary
        assert_latest_equal_warehouse(store, warehouse)
        ttl = private_redis_client(private_redis).ttl(latest_key("binance", "BTCUSDT", "trade"))
        assert 0 < ttl <= 86_400

        # The stream holds every final bar: its newest version of each minute is the
        # warehouse's bar, and it holds no other minute.
        rows = warehouse.query_arrow(
            f"SELECT {COLUMNS_1M} FROM bars_1m AS b FINAL WHERE b.source = 'binance'"
        ).to_pylist()
        stored = {(r["symbol"], r["ts_event"]): Bar.model_validate(r) for r in rows}
        assert {s for s, _ in stored} == set(SYMBOLS)
        assert stream_bars(private_redis_client(private_redis)) == stored

        # The data service serves them from Redis.
        base = api.wait_ready()
        token = api.token
        for symbol in SYMBOLS:
            answer = httpx.get(
                f"{base}/v1/latest/{symbol}?source=binance",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            cached = latest.from_redis(store, "binance", symbol)
            for kind in KINDS:
                assert body[kind]["from"] == "redis", body
                model = latest.ITEMS[kind][0]
                assert model.model_validate(body[kind]["value"]) == cached[kind], kind
    finally:
        api.stop()
        store.close()
        drop(warehouse)


def private_redis_client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=5)


def trade_count(warehouse) -> int:
    return warehouse.scalar("SELECT count() FROM trades WHERE source = 'binance'")


def test_redis_outage_neither_stalls_nor_loses_the_warehouse_path(
    tmp_path: Path, clickhouse_url, private_redis
) -> None:
    warehouse = fresh_warehouse(clickhouse_url)
    store = LatestStore(private_redis.url)
    client = private_redis_client(private_redis)
    key = latest_key("binance", "BTCUSDT", "trade")
    try:
        sim = start_sim(tmp_path, "--rate", "300", "--seed", "43", "--symbols", "btcusdt,ethusdt")
        env = live_env(sim, warehouse, tmp_path / "home", REDIS_URL=private_redis.url)
        live = start_live(tmp_path, "live", env, "btcusdt,ethusdt")
        wait_for("the first latest trade in redis", lambda: client.get(key), proc=live)

        private_redis.stop()  # restarted empty below: nothing is persisted
        during = trade_count(warehouse)
        # The warehouse path goes on while Redis is down (no stall).
        wait_for(
            "trades stored while redis is down",
            lambda: trade_count(warehouse) >= during + 600,
            proc=live,
        )
        private_redis.start()
        client = private_redis_client(private_redis)
        # Caught up while still running: every series' values are back (not only changed ones).
        wait_for(
            "the latest values back in redis",
            lambda: all(
                client.get(latest_key("binance", s, k))
                for s in SYMBOLS
                for k in ("trade", "book_ticker")
            ),
            proc=live,
        )
        live.signal(signal.SIGTERM)
        summary = live.summary(120)
        sim.pause()
        for symbol in SYMBOLS:
            check_trades(warehouse, sim, symbol)  # contiguous, exactly the exchange's
        redis_stats = summary["sinks"]["redis"]
        assert redis_stats["outages"] == 1 and redis_stats["failures"] >= 1, summary
        assert redis_stats["pending"] == 0, summary
        assert_latest_equal_warehouse(store, warehouse, kinds={"trade", "book_ticker"})
        # One line when the outage starts and one when it ends, not one per failed write.
        stderr = live.stderr.read_text()
        assert stderr.count("unavailable") == 1 and stderr.count("answers again") == 1, stderr
        assert private_redis.password not in stderr
    except BaseException:
        for name in ("live.stderr", "sim.stderr"):
            print(f"--- {name} ---\n{tail(tmp_path / name)}")
        raise
    finally:
        stop_all()
        store.close()
        drop(warehouse)


# -- the sink on its own, against the private redis-server ------------------------------------


def trade(trade_id: int, ts_ms: int, symbol: str = "BTCUSDT") -> pa.Table:
    """One ``trades`` row as the warehouse (and so the sink) gets it."""
    ints = {
        "trade_id": [trade_id],
        "first_trade_id": [trade_id],
        "last_trade_id": [trade_id],
        "price": [4_200_000_000_000],
        "qty": [10**6],
        "ts": [ts_ms],
        "ts_init": [1],
    }
    ints = {k: np.array(v, np.int64) for k, v in ints.items()}
    return trade_columns_table([symbol], ["aggTrade"], ints, np.array([False]), "")


async def settle(sink: RedisSink, until, timeout_s: float = 30.0) -> None:
    """Flush until ``until()`` holds (the writes go out from a background task)."""
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, "the sink did not get there"
        await sink.flush()
        await asyncio.sleep(0.05)


def test_sink_sends_released_rows_only_and_never_an_older_value(private_redis) -> None:
    client = private_redis_client(private_redis)
    key = latest_key("binance", "BTCUSDT", "trade")

    async def scenario() -> None:
        sink = RedisSink(private_redis.url)
        sink.trade_table(trade(10, 1_700_000_000_000))
        sink.trade_table(trade(9, 1_700_000_000_000))  # same time, lower id: older
        await sink.flush()
        await asyncio.sleep(0.2)
        assert client.get(key) is None  # staged, not released: nothing leaves the process
        sink.release()
        await settle(sink, lambda: client.get(key))
        assert Trade.model_validate_json(client.get(key)).trade_id == 10
        sink.trade_table(trade(8, 1_699_999_999_000))  # a repaired, older trade
        sink.release()
        await sink.close()
        assert Trade.model_validate_json(client.get(key)).trade_id == 10
        assert sink.counts()["failures"] == 0

    asyncio.run(scenario())


def test_sink_outage_is_counted_logged_once_and_caught_up(private_redis, caplog) -> None:
    key = latest_key("binance", "BTCUSDT", "trade")

    async def scenario() -> None:
        sink = RedisSink(private_redis.url)
        sink.trade_table(trade(1, 1_700_000_000_000))
        sink.trade_table(trade(5, 1_700_000_000_000, "ETHUSDT"))  # unchanged during the outage
        sink.release()
        await settle(sink, lambda: sink.written == 2)
        private_redis.stop()
        sink.trade_table(trade(2, 1_700_000_001_000))
        sink.release()
        await settle(sink, lambda: sink.failures >= 3, timeout_s=60)  # backoff 0.5, 1, 2 s
        assert sink.pending  # kept, not dropped
        private_redis.start()  # empty: nothing persisted
        client = private_redis_client(private_redis)
        await settle(sink, lambda: not sink.pending and sink.down_since is None, timeout_s=60)
        assert Trade.model_validate_json(client.get(key)).trade_id == 2
        # The restarted Redis was empty: the unchanged series is written again too.
        eth = client.get(latest_key("binance", "ETHUSDT", "trade"))
        assert eth is not None and Trade.model_validate_json(eth).trade_id == 5
        await sink.close()
        assert sink.counts()["outages"] == 1

    with caplog.at_level(logging.WARNING, logger="quant_resources.live.redis_sink"):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records]
    assert sum("unavailable" in line for line in lines) == 1, lines
    assert sum("answers again" in line for line in lines) == 1, lines
    assert not any(private_redis.password in line for line in lines)
