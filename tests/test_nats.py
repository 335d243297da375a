"""``quant live`` publishes v1 contract JSON to NATS; ``quant nats tail`` shows it.

Real processes: the simulator, ``quant live`` with NATS_URL set, and two ``quant nats tail``
subscribers against the test services' nats-server.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from quant_core.contracts import Bar, BookTicker, Trade
from quant_dev.processes import Child, quant, tail
from tests.live_helpers import (
    MINUTE_MS,
    STARTED,
    drop,
    fresh_warehouse,
    live_env,
    seconds_to_minute_end,
    start_live,
    start_sim,
    stop_all,
)

# In the "live" group: the live write-ahead test also publishes on v1.market.*, and both
# subscribe to everything there.
pytestmark = pytest.mark.xdist_group("live")

SYMBOLS = ("BTCUSDT", "ETHUSDT")
SUBJECTS = ("v1.market.trades.binance.*", "v1.market.bbo.binance.*", "v1.market.bars.binance.*.1m")


def start_tail(workdir: Path, name: str, nats_url: str, *args: str) -> Child:
    """``quant nats tail`` writing to a file; returns once its subscriptions are in place."""
    stderr = workdir / f"{name}.stderr"
    child = Child(
        "quant nats tail",
        quant("nats", "tail", *args),
        lambda: "subscribed to " in stderr.read_text(),
        {"NATS_URL": nats_url},
        log=workdir / f"{name}.jsonl",
        stderr_log=stderr,
        start_timeout=60,
    )
    STARTED.append(child)
    return child


def read_lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def test_live_publishes_contract_json_and_nats_tail_prints_it(tmp_path, clickhouse_url, nats_url):
    warehouse = fresh_warehouse(clickhouse_url)
    try:
        everything = start_tail(tmp_path, "all", nats_url, *SUBJECTS)
        five = start_tail(tmp_path, "five", nats_url, "v1.market.trades.binance.BTCUSDT", "-n", "5")
        # The simulator's clock puts a minute boundary about 15 s after `quant live` starts.
        sim = start_sim(
            tmp_path,
            *("--rate", "200", "--seed", "31", "--symbols", "btcusdt,ethusdt"),
            minute_in=15,
        )
        # Stop 1 s after a minute boundary: the clean stop writes and publishes that minute's
        # bar, so bars are seen without waiting for the lateness of a second minute.
        wait = seconds_to_minute_end(sim.now())
        duration = (wait if wait >= 10 else wait + 60) + 1.0
        env = live_env(sim, warehouse, tmp_path / "home", NATS_URL=nats_url)
        live = start_live(tmp_path, "live", env, "btcusdt,ethusdt", duration)
        summary = live.summary(duration + 120)
        sim.pause()

        assert five.wait(30) == 0, five.tail()
        first_five = read_lines(tmp_path / "five.jsonl")
        assert len(first_five) == 5
        assert all(m["subject"] == "v1.market.trades.binance.BTCUSDT" for m in first_five)

        # The last messages reach the subscriber after live has exited: wait until it has
        # written as many as were published (bounded), instead of guessing a delay.
        deadline = time.monotonic() + 60
        published = summary["sinks"]["nats"]["published"]
        while time.monotonic() < deadline:
            if (tmp_path / "all.jsonl").read_bytes().count(b"\n") >= published:
                break
            time.sleep(0.2)
        everything.signal(signal.SIGTERM)
        assert everything.wait(30) == 0, everything.tail()
        messages = read_lines(tmp_path / "all.jsonl")
    except BaseException:
        for name in ("live.stderr", "sim.stderr"):
            print(f"--- {name} ---\n{tail(tmp_path / name)}")
        raise
    finally:
        stop_all()

    kinds = Counter(m["subject"].split(".")[2] for m in messages)
    trades = [
        Trade.model_validate_json(orjson.dumps(m["data"]))
        for m in messages
        if m["subject"].startswith("v1.market.trades.")
    ]
    quotes = [
        BookTicker.model_validate_json(orjson.dumps(m["data"]))
        for m in messages
        if m["subject"].startswith("v1.market.bbo.")
    ]
    bar_messages = [m for m in messages if m["subject"].startswith("v1.market.bars.")]
    bars = [Bar.model_validate_json(orjson.dumps(m["data"])) for m in bar_messages]
    for m in messages:
        assert m["subject"].split(".")[4] == m["data"]["symbol"], m

    assert summary["sinks"]["nats"]["dropped"] == 0
    assert summary["sinks"]["nats"]["published"] == len(messages), kinds
    # Every stored trade was published exactly once, and nothing else.
    stored = set(
        warehouse.query_rows("SELECT symbol, trade_id FROM trades FINAL WHERE source = 'binance'")
    )
    published = Counter((t.symbol, t.trade_id) for t in trades)
    assert len(trades) == summary["rows_written"]["trades"] == len(stored)
    assert set(published) == stored and max(published.values()) == 1
    assert len(quotes) == summary["rows_written"]["quotes"] == summary["quotes"]

    # The bars: one per symbol and ended minute at least, each the same as the warehouse's
    # (the highest Quant-Bar-Version of a minute is the final one).
    assert {b.symbol for b in bars} == set(SYMBOLS)
    final: dict[tuple[str, int], tuple[int, Bar]] = {}
    for message, bar in zip(bar_messages, bars, strict=True):
        version = int(message["headers"]["Quant-Bar-Version"])
        key = (bar.symbol, int(bar.ts_event.timestamp() * 1000))
        if key not in final or version > final[key][0]:
            final[key] = (version, bar)
    rows = warehouse.query_rows(
        "SELECT symbol, toUnixTimestamp64Milli(ts), toString(open), toString(high), "
        "toString(low), toString(close), toString(volume), trade_count FROM bars_1m FINAL"
    )
    assert len(rows) == len(final)
    for symbol, ts, o, h, low, c, v, n in rows:
        bar = final[(symbol, ts)][1]
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count) == (
            Decimal(o),
            Decimal(h),
            Decimal(low),
            Decimal(c),
            Decimal(v),
            n,
        )
        assert ts % MINUTE_MS == 0 and ts + MINUTE_MS <= summary["stop_exchange_ms"]
    drop(warehouse)
