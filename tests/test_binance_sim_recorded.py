"""``quant sim binance --source``: a recording served with the exchange's clock rules (one
publication order for every client, REST knowing only what was published, a clock that runs
on once the source is exhausted), and the pure pieces it and the live job build on."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from quant_core.bars import StreamingBarAggregator
from quant_core.exchange_clock import clock_meta
from quant_core.id_runs import IdRuns
from quant_core.replay import ReplayDriver
from quant_dev.binance_sim.recorded import SourceError, load_source
from quant_resources.session_writer import SessionWriter
from tests.test_binance_sim import _start, _stop, connect, wait_until

pytestmark = pytest.mark.xdist_group("binance_sim")

T0 = 1_600_000_020_000
N = 200


def capture(tmp_path):
    """A cryptofeed capture: N aggTrades of BTCUSDT 1 s apart, a bookTicker after each."""
    lines = [b"wss://stream.binance.com:9443/stream?streams=btcusdt@aggTrade <-> 1600000020.0"]
    for a in range(1, N + 1):
        data = {"e": "aggTrade", "E": T0 + a * 1000 + 1, "s": "BTCUSDT", "a": a, "f": a, "l": a,
                "p": "1.00000000", "q": "2.00000000", "T": T0 + a * 1000, "m": False}  # fmt: skip
        frame = orjson.dumps({"stream": "btcusdt@aggTrade", "data": data})
        lines.append(f"{(T0 + a * 1000) / 1000}: ".encode() + frame)
        book = {"u": a, "s": "BTCUSDT", "b": "0.9", "B": "1", "a": "1.1", "A": "1"}
        lines.append(
            f"{(T0 + a * 1000) / 1000}: ".encode()
            + orjson.dumps({"stream": "btcusdt@bookTicker", "data": book})
        )
    path = tmp_path / "BINANCE.ws.1.0"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


async def read_ids(ws, n: int) -> list[int]:
    ids = []
    while len(ids) < n:
        msg = orjson.loads(await ws.recv())
        ids.append(msg["data"]["a"])
    return ids


def test_one_publication_order_and_rest_knows_only_what_was_published(tmp_path):
    sim = _start("--source", str(capture(tmp_path)), "--rate", "100")
    try:
        now = sim.get("/api/v3/time")["serverTime"]
        assert now == T0 + 1000  # before the first publication: at its first trade
        # REST knows the first trade (the history's start), nothing after it.
        assert [r["a"] for r in sim.get("/api/v3/aggTrades?symbol=BTCUSDT&fromId=1")] == [1]

        async def two_clients():
            async with connect(f"{sim.ws}/stream?streams=btcusdt@aggTrade") as first:
                early = await read_ids(first, 20)
                async with connect(f"{sim.ws}/stream?streams=btcusdt@aggTrade") as second:
                    late = await read_ids(second, 10)
                    more = await read_ids(first, 100)
            return early, late, more

        early, late, more = asyncio.run(asyncio.wait_for(two_clients(), 60))
        assert early == list(range(1, 21))
        assert late[0] > 20  # a client connected later never gets earlier frames
        assert late == [a for a in more if a >= late[0]][:10]  # the same frames, same order
        known = sim.get("/api/v3/aggTrades?symbol=BTCUSDT&fromId=1&limit=1000")
        clock = sim.get("/api/v3/time")["serverTime"]
        assert known and all(r["T"] <= clock for r in known)

        stats = wait_until(lambda: (s := sim.stats())["exhausted"] and s, "the end of the source")
        first_idle = sim.get("/api/v3/time")["serverTime"]
        assert first_idle >= T0 + N * 1000 + 1
        wait_until(
            lambda: sim.get("/api/v3/time")["serverTime"] > first_idle + 200,
            "the exchange clock to run on while idle",
        )
        assert stats["last_agg_id"] == {"BTCUSDT": N}
        rows = sim.get("/api/v3/aggTrades?symbol=BTCUSDT&startTime=0&limit=5")
        assert [r["a"] for r in rows] == [1, 2, 3, 4, 5]
        latest = sim.get("/api/v3/aggTrades?symbol=BTCUSDT&limit=3")
        assert [r["a"] for r in latest] == [N - 2, N - 1, N]
        status, _, body = sim.http("/api/v3/aggTrades?symbol=ETHUSDT")
        assert (status, body["code"]) == (400, -1121)
    finally:
        _stop(sim)


def test_session_log_source_merges_rest_repairs_by_id(tmp_path):
    writer = SessionWriter(tmp_path, "s", "binance", ["aggTrade"], ["BTCUSDT"], "test")
    row = {"a": 5, "p": "1.0", "q": "1.0", "f": 5, "l": 5, "T": T0, "m": True, "M": True}
    frame = {"stream": "btcusdt@aggTrade", "data": {"e": "aggTrade", "E": T0, "s": "BTCUSDT"}}
    frame["data"].update(row)
    writer.append("ws", 1, 1, orjson.dumps(frame))
    repair = [{**row, "a": 4, "T": T0 - 5}, row]  # one new trade, one the stream had
    meta = {"path": "/api/v3/aggTrades", "symbol": "BTCUSDT", "params": {}}
    writer.append("rest", 0, 2, orjson.dumps(repair), meta)
    writer.close(None)
    source = load_source(tmp_path / "s")
    assert [f.stream for f in source.frames] == ["btcusdt@aggTrade"]
    assert source.history["BTCUSDT"].ids == [4, 5]
    (tmp_path / "bad.txt").write_bytes(b"hello\n")
    with pytest.raises(SourceError, match="neither a cryptofeed header"):
        load_source(tmp_path / "bad.txt")


def test_id_runs_behave_as_a_set() -> None:
    rng = random.Random(3)
    for _ in range(200):
        runs, plain = IdRuns(), set()
        for _ in range(rng.randint(1, 6)):
            ids = [rng.randint(0, 60) for _ in range(rng.randint(0, 12))]
            if rng.random() < 0.7:
                runs.update(ids)
            else:
                for x in ids:
                    runs.add(x)
            plain.update(ids)
        probe = [rng.randint(-2, 62) for _ in range(10)]
        assert [x in runs for x in probe] == [x in plain for x in probe]
        assert runs.isdisjoint(probe) == plain.isdisjoint(probe)
        assert len(runs) == len(plain)
        assert all(int(h) + 1 < int(lo) for h, lo in zip(runs.hi[:-1], runs.lo[1:], strict=True))


def test_replay_applies_recorded_heartbeats_as_live_did() -> None:
    """A ``clock`` record closes a quiet minute in replay exactly where it did live."""
    from tests.test_bars import trade

    pipeline = ReplayDriver(("BTCUSDT",))
    data = {"e": "aggTrade", "E": T0 + 5, "s": "BTCUSDT", "a": 1, "p": "1.0", "q": "1.0",
            "f": 1, "l": 1, "T": T0 + 5, "m": True, "M": True}  # fmt: skip
    frame = {"stream": "btcusdt@aggTrade", "data": data}
    pipeline.on_ws(orjson.dumps(frame))
    assert pipeline.bars == {}
    pipeline.on_conn(clock_meta(T0 + 64_000))  # ended, twice the lateness passed
    minute = T0 - T0 % 60_000
    assert list(pipeline.bars) == [("BTCUSDT", minute)]
    live = StreamingBarAggregator()
    live.add_trade(trade(1, T0 + 5, price=10**8, qty=10**8, maker=True))
    (bar,) = live.heartbeat(T0 + 64_000)
    assert bar == pipeline.bars[("BTCUSDT", minute)]


def test_a_trade_for_a_bar_written_long_ago_writes_a_new_version() -> None:
    """Hours of exchange time later, a repaired trade still corrects its bar (not dropped)."""
    from tests.test_bars import trade

    agg = StreamingBarAggregator(lateness_ms=0)
    agg.add_trade(trade(10, T0))
    assert len(agg.advance(T0 + 60_000)) == 1
    agg.advance(T0 + 6 * 3_600_000)
    (v2,) = agg.add_trade(trade(9, T0 + 1, price=200 * 10**8))
    assert (v2.version, v2.trade_count, v2.high) == (2, 2, 200 * 10**8) and agg.dropped_late == 0
    assert agg.add_trade(trade(9, T0 + 1)) == [] and agg.duplicates == 1
