"""``quant sim binance`` as a real subprocess, driven by a real WebSocket client and HTTP."""

from __future__ import annotations

import asyncio
import base64
import http.client
import itertools
import os
import re
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson
import pytest
import websockets
from pydantic import ValidationError

from quant_core.formats.binance import FrameError, parse_combined_frame
from quant_dev.processes import Child, quant

pytestmark = pytest.mark.xdist_group("binance_sim")

BOOK_ID_OFFSET = 40_000_000_000  # bookTicker u = aggregate id + this (see market.py)
EIGHT = re.compile(r"^\d+\.\d{8}$")


@dataclass
class Sim:
    port: int
    child: Child

    @property
    def proc(self) -> subprocess.Popen:
        return self.child.process

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def http(self, path: str, body: Any = None) -> tuple[int, Any, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(
                "GET" if body is None else "POST",
                path,
                None if body is None else orjson.dumps(body),
            )
            resp = conn.getresponse()
            return resp.status, resp.headers, orjson.loads(resp.read())
        finally:
            conn.close()

    def get(self, path: str) -> Any:
        status, _, data = self.http(path)
        assert status == 200, (path, data)
        return data

    def stats(self) -> dict:
        return self.get("/_sim/stats")

    def trigger(self, kind: str, param: float | None = None) -> None:
        status, _, data = self.http("/_sim/faults", {"trigger": kind, "param": param})
        assert status == 200 and data["connections"] >= 1, data


def _start(*args: str) -> Sim:
    child = Child(
        "quant sim binance",
        quant("sim", "binance", "--port", "0", *args),
        r"^listening on ws://127\.0\.0\.1:(\d+) \(rest http://127\.0\.0\.1:\1\)$",
    )
    return Sim(int(child.match[1]), child)


def _stop(sim: Sim) -> None:
    sim.child.stop(10)


@pytest.fixture(scope="module")
def sims():
    started = {
        "main": _start("--rate", "400", "--seed", "11", "--start-trade-id", "1000"),
        "timers": _start(
            "--rate",
            "50",
            "--ping-interval",
            "0.4",
            "--pong-timeout",
            "1.0",
            "--max-conn-seconds",
            "3",
            "--weight-limit",
            "100",
        ),
        "faults": _start(
            "--rate",
            "300",
            "--seed",
            "5",
            "--fault-gap",
            "30",
            "--faults",
            "duplicate:2,malformed:2,reorder:2",
        ),
    }
    yield started
    for sim in started.values():
        _stop(sim)


@pytest.fixture
def sim(sims) -> Sim:
    return sims["main"]


def wait_until(check, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def connect(url: str):
    # max_queue=None: a test that stops reading must not stall the closing handshake.
    return websockets.connect(
        url, ping_interval=None, max_size=None, max_queue=None, compression=None
    )


async def recv_json(ws) -> dict:
    return orjson.loads(await ws.recv())


async def until_reply(ws, rid) -> dict:
    while True:
        msg = await recv_json(ws)
        if msg.get("id") == rid and ("result" in msg or "error" in msg):
            return msg


# -- stream contract and ordering ------------------------------------------------------


def test_combined_frames_are_contracts_with_contiguous_ids(sim: Sim):
    streams = "/".join(
        f"{s}@{k}" for s in ("btcusdt", "ethusdt") for k in ("aggTrade", "trade", "bookTicker")
    )

    async def collect():
        async with connect(f"{sim.ws}/stream?streams={streams}") as ws:
            return [await ws.recv() for _ in range(1500)]

    frames = run(collect())
    last_agg: dict[str, dict] = {}
    last_trade: dict[str, int] = {}
    last_book: dict[str, int] = {}
    trade_ids: dict[str, list[int]] = {"BTCUSDT": [], "ETHUSDT": []}
    agg_ranges: dict[str, list[int]] = {"BTCUSDT": [], "ETHUSDT": []}
    for raw in frames:
        parse_combined_frame(raw, ts_init=datetime.now(UTC))  # a valid v1 contract
        frame = orjson.loads(raw)
        data, kind = frame["data"], frame["stream"].split("@")[1]
        sym = data["s"]
        assert frame["stream"] == f"{sym.lower()}@{kind}"
        if kind == "aggTrade":
            assert data["E"] >= data["T"] and data["M"] is True
            assert EIGHT.match(data["p"]) and EIGHT.match(data["q"])
            prev = last_agg.get(sym)
            if prev is not None:
                assert data["a"] == prev["a"] + 1, (prev, data)
                assert data["f"] == prev["l"] + 1 and data["T"] >= prev["T"]
            assert 1 <= data["l"] - data["f"] + 1 <= 3
            agg_ranges[sym].extend(range(data["f"], data["l"] + 1))
            last_agg[sym] = data
        elif kind == "trade":
            if sym in last_trade:
                assert data["t"] == last_trade[sym] + 1
            last_trade[sym] = data["t"]
            trade_ids[sym].append(data["t"])
        else:
            assert set(data) == {"u", "s", "b", "B", "a", "A"}  # spot: no E/T
            assert Decimal(data["b"]) < Decimal(data["a"])
            if sym in last_book:
                assert data["u"] > last_book[sym]
            last_book[sym] = data["u"]
    for sym in ("BTCUSDT", "ETHUSDT"):
        # The aggregates' f..l ranges tile exactly the underlying trades that were streamed.
        shared = sorted(set(agg_ranges[sym]) & set(trade_ids[sym]))
        assert len(shared) > 100
        assert shared == list(range(shared[0], shared[-1] + 1))
    stats = sim.stats()
    assert stats["last_agg_id"]["BTCUSDT"] >= last_agg["BTCUSDT"]["a"]
    assert stats["frames_sent"]["aggTrade"] >= sum(1 for f in frames if "@aggTrade" in f)


def test_subscribe_unsubscribe_list_and_errors(sim: Sim):
    async def scenario():
        async with connect(f"{sim.ws}/stream") as ws:
            await ws.send('{"method":"SUBSCRIBE","params":["ethusdt@aggTrade"],"id":1}')
            assert await until_reply(ws, 1) == {"result": None, "id": 1}
            got = await recv_json(ws)
            assert got["stream"] == "ethusdt@aggTrade"
            await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":2}')
            assert (await until_reply(ws, 2))["result"] == ["ethusdt@aggTrade"]
            await ws.send('{"method":"SUBSCRIBE","params":["ethusdt@depthz"],"id":3}')
            error = await until_reply(ws, 3)
            assert error["error"]["code"] == 2 and error["error"]["msg"].startswith(
                "Invalid request"
            )
            await asyncio.sleep(1.1)  # stay under 5 messages per second
            too_many = [f"s{i:04d}usdt@trade" for i in range(1025)]
            await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": too_many, "id": 4}))
            assert (await until_reply(ws, 4))["error"]["code"] == 2
            await ws.send('{"method":"UNSUBSCRIBE","params":["ethusdt@aggTrade"],"id":5}')
            assert await until_reply(ws, 5) == {"result": None, "id": 5}
            await ws.send("{not json")
            bad = await recv_json(ws)
            assert bad["error"]["code"] == 3
            # Nothing of the unsubscribed stream follows the acknowledgement.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.5)

    run(scenario())


def test_six_messages_in_a_second_disconnect(sim: Sim):
    before = sim.stats()["rate_limit_disconnects"]

    async def scenario():
        async with connect(f"{sim.ws}/stream") as ws:
            for i in range(5):
                await ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            for i in range(5):
                assert (await until_reply(ws, i))["result"] == []
            await asyncio.sleep(1.1)
            for i in range(6):
                await ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 10 + i}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            return closed.value

    closed = run(scenario())
    assert closed.rcvd is not None and closed.rcvd.code == 1008
    assert sim.stats()["rate_limit_disconnects"] == before + 1


# -- REST ------------------------------------------------------------------------------


def test_rest_pages_return_exactly_what_the_stream_showed(sim: Sim):
    async def collect():
        async with connect(f"{sim.ws}/stream?streams=btcusdt@aggTrade/btcusdt@trade") as ws:
            return [orjson.loads(await ws.recv())["data"] for _ in range(900)]

    frames = run(collect())
    aggs = [d for d in frames if d["e"] == "aggTrade"]
    trades = [d for d in frames if d["e"] == "trade"]
    rows, next_id = [], aggs[0]["a"]
    while next_id <= aggs[-1]["a"]:
        page = sim.get(f"/api/v3/aggTrades?symbol=BTCUSDT&fromId={next_id}&limit=100")
        assert page and page[0]["a"] == next_id
        rows += page
        next_id = page[-1]["a"] + 1
    by_id = {r["a"]: r for r in rows}
    for d in aggs:
        assert by_id[d["a"]] == {k: d[k] for k in ("a", "p", "q", "f", "l", "T", "m", "M")}
    hist = sim.get(f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={trades[0]['t']}&limit=1000")
    hist_by_id = {r["id"]: r for r in hist}
    for d in trades:
        row = hist_by_id[d["t"]]
        assert (row["price"], row["qty"], row["time"], row["isBuyerMaker"]) == (
            d["p"],
            d["q"],
            d["T"],
            d["m"],
        )
        exact = Decimal(d["p"]) * Decimal(d["q"])
        assert row["quoteQty"] == str(exact.quantize(Decimal("1e-8"), ROUND_HALF_EVEN))
    # Time-window queries select by T, inclusive at both ends.
    t0 = aggs[10]["T"]
    window = sim.get(f"/api/v3/aggTrades?symbol=BTCUSDT&startTime={t0}&endTime={t0}")
    assert window and all(r["T"] == t0 for r in window)
    assert {r["a"] for r in window} >= {d["a"] for d in aggs if d["T"] == t0}
    recent = sim.get("/api/v3/trades?symbol=BTCUSDT&limit=5")
    assert len(recent) == 5 and [r["id"] for r in recent] == list(
        range(recent[0]["id"], recent[0]["id"] + 5)
    )


def _plain_klines(trades: list[dict], step: int) -> dict[int, list]:
    """Every bucket from the first to the last trade; empty ones open at the last close."""
    out: dict[int, list] = {}
    for t in trades:
        p, q = Decimal(t["price"]), Decimal(t["qty"])
        k = t["time"] - t["time"] % step
        if k not in out:
            out[k] = [p, p, p, p, Decimal(0), Decimal(0), 0, Decimal(0), Decimal(0)]
        row = out[k]
        row[1], row[2], row[3] = max(row[1], p), min(row[2], p), p
        row[4] += q
        row[5] += p * q
        row[6] += 1
        if not t["isBuyerMaker"]:
            row[7] += q
            row[8] += p * q
    opens = range(min(out), max(out) + 1, step)
    for k in opens:
        if k not in out:
            close = out[k - step][3]
            out[k] = [close] * 4 + [Decimal(0)] * 2 + [0] + [Decimal(0)] * 2
    eight = Decimal("1e-8")
    return {
        k: [
            k,
            *(f"{x.quantize(eight, ROUND_HALF_EVEN)}" for x in r[:5]),
            k + step - 1,
            f"{r[5].quantize(eight, ROUND_HALF_EVEN)}",
            r[6],
            f"{r[7].quantize(eight, ROUND_HALF_EVEN)}",
            f"{r[8].quantize(eight, ROUND_HALF_EVEN)}",
            "0",
        ]
        for k, r in out.items()
    }


def test_klines_equal_a_plain_computation_from_rest_trades(sim: Sim):
    assert sim.http("/_sim/market", {"paused": True})[0] == 200
    try:
        stats = sim.stats()
        first, last = stats["first_trade_id"]["BTCUSDT"], stats["last_trade_id"]["BTCUSDT"]
        trades: list[dict] = []
        while not trades or trades[-1]["id"] < last:
            start = trades[-1]["id"] + 1 if trades else first
            trades += sim.get(f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={start}&limit=1000")
        assert [t["id"] for t in trades] == list(range(first, last + 1))
        for interval, step in (("1m", 60_000), ("1s", 1_000)):
            expected = _plain_klines(trades, step)
            got = sim.get(
                f"/api/v3/klines?symbol=BTCUSDT&interval={interval}"
                f"&startTime={trades[0]['time']}&limit=1000"
            )
            first_open = -(-trades[0]["time"] // step) * step  # openTime >= startTime
            wanted = [row for k, row in sorted(expected.items()) if k >= first_open]
            assert got[: len(wanted)] == wanted
            # Buckets after the last trade (the market is paused) open at the last close.
            for row in got[len(wanted) :]:
                assert row[1:5] == [trades[-1]["price"]] * 4 and row[8] == 0
    finally:
        sim.http("/_sim/market", {"paused": False})


def test_rest_errors_exchange_info_and_weight(sims):
    sim = sims["main"]
    assert sim.http("/api/v3/aggTrades?symbol=NOPEUSDT")[0::2] == (
        400,
        {"code": -1121, "msg": "Invalid symbol."},
    )
    assert sim.http("/api/v3/klines?symbol=BTCUSDT&interval=7m")[2]["code"] == -1120
    assert sim.http("/api/v3/trades")[2]["code"] == -1102
    status, headers, info = sim.http("/api/v3/exchangeInfo")
    assert status == 200 and int(headers["X-MBX-USED-WEIGHT-1M"]) >= 20
    assert [
        (s["symbol"], s["status"], s["baseAsset"], s["quoteAsset"]) for s in info["symbols"]
    ] == [("BTCUSDT", "TRADING", "BTC", "USDT"), ("ETHUSDT", "TRADING", "ETH", "USDT")]
    limited = sims["timers"]  # 100 weight per minute; exchangeInfo weighs 20
    for _ in range(15):  # a minute boundary may reset the count once
        status, headers, body = limited.http("/api/v3/exchangeInfo")
        if status == 429:
            break
    assert status == 429 and body["code"] == -1003
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert int(headers["X-MBX-USED-WEIGHT-1M"]) > 100
    assert limited.stats()["rest_429"] >= 1


def test_same_seed_same_market_at_any_rate(sim: Sim):
    other = _start("--rate", "2000", "--seed", "11", "--start-trade-id", "1000")
    try:
        wait_until(lambda: other.stats()["aggs_generated"]["BTCUSDT"] > 300, "trades")
        first = sim.stats()["first_agg_id"]["BTCUSDT"]
        path = f"/api/v3/aggTrades?symbol=BTCUSDT&fromId={first}&limit=300"
        strip = [{k: r[k] for k in ("a", "p", "q", "f", "l", "m")} for r in sim.get(path)]
        assert strip == [{k: r[k] for k in ("a", "p", "q", "f", "l", "m")} for r in other.get(path)]
    finally:
        _stop(other)


# -- pings, lifetime, slow readers -------------------------------------------------------


def test_pings_are_answered_by_the_client_and_keep_it_connected(sims):
    sim = sims["timers"]
    before = sim.stats()

    async def scenario():
        async with connect(f"{sim.ws}/stream?streams=btcusdt@trade") as ws:
            deadline = time.monotonic() + 2.0  # 5 pings at 0.4 s, pong timeout 1.0 s
            while time.monotonic() < deadline:
                await ws.recv()
            return ws.state.name

    assert run(scenario()) == "OPEN"
    after = sim.stats()
    assert after["pongs_received"] - before["pongs_received"] >= 3
    assert after["ping_timeouts"] == before["ping_timeouts"]


def _raw_connect(port: int, path: str, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(30)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def _raw_frames(sock: socket.socket):
    """(opcode, payload) of unmasked server frames until EOF."""
    buf = b""
    while True:
        while len(buf) >= 10 or (len(buf) >= 2 and buf[1] & 0x7F < 126):
            n, pos = buf[1] & 0x7F, 2
            if n == 126:
                n, pos = struct.unpack_from("!H", buf, 2)[0], 4
            elif n == 127:
                n, pos = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < pos + n:
                break
            yield buf[0] & 0x0F, buf[pos : pos + n]
            buf = buf[pos + n :]
        data = sock.recv(65536)
        if not data:
            return
        buf += data


def test_a_client_that_never_pongs_is_dropped(sims):
    sim = sims["timers"]
    before = sim.stats()["ping_timeouts"]
    with _raw_connect(sim.port, "/stream?streams=btcusdt@aggTrade") as sock:
        ops = [(op, payload) for op, payload in _raw_frames(sock)]
    assert any(op == 0x9 for op, _ in ops)  # pinged, never answered
    close = [payload for op, payload in ops if op == 0x8]
    assert close and struct.unpack("!H", close[0][:2])[0] == 1008
    assert sim.stats()["ping_timeouts"] == before + 1


def test_connections_close_at_the_lifetime_limit(sims):
    sim = sims["timers"]
    before = sim.stats()["lifetime_disconnects"]

    async def scenario():
        async with connect(f"{sim.ws}/stream?streams=ethusdt@aggTrade") as ws:
            with pytest.raises(websockets.ConnectionClosedOK) as closed:
                while True:
                    await ws.recv()
            return closed.value

    closed = run(scenario())
    assert closed.rcvd is not None and closed.rcvd.code == 1000
    assert sim.stats()["lifetime_disconnects"] == before + 1


def test_a_slow_reader_is_dropped():
    sim = _start("--rate", "20000", "--max-send-buffer", "65536")
    streams = "/".join(
        f"{s}@{k}" for s in ("btcusdt", "ethusdt") for k in ("aggTrade", "trade", "bookTicker")
    )
    try:
        with _raw_connect(sim.port, f"/stream?streams={streams}", rcvbuf=4096) as sock:
            # Read nothing: the kernel buffers fill, then the simulator's own queue.
            wait_until(lambda: sim.stats()["slow_reader_drops"] == 1, "the slow-reader drop")
            with pytest.raises((ConnectionResetError, StopIteration)):  # dropped, no close frame
                ops = _raw_frames(sock)
                while True:
                    op, _ = next(ops)
                    assert op != 0x8
        assert sim.stats()["connections_open"] == 0
    finally:
        _stop(sim)


# -- faults ----------------------------------------------------------------------------


def _bad(raw: str | bytes) -> bool:
    try:
        parse_combined_frame(raw, ts_init=datetime.now(UTC))
    except (FrameError, ValidationError):
        return True
    return False


def test_triggered_duplicate_malformed_and_reorder_are_seen_by_the_client(sim: Sim):
    before = sim.stats()["faults"]

    async def scenario():
        seen: dict[str, bool] = {}
        async with connect(f"{sim.ws}/stream?streams=btcusdt@aggTrade/btcusdt@bookTicker") as ws:
            last_a = last_book = 0
            for kind in ("duplicate", "malformed", "reorder"):
                await asyncio.to_thread(sim.trigger, kind)
                while kind not in seen:
                    raw = await ws.recv()
                    if _bad(raw):
                        seen["malformed"] = True
                        continue
                    data = orjson.loads(raw)["data"]
                    if "a" in data and "e" in data:
                        if data["a"] <= last_a:
                            seen["duplicate"] = True
                        last_a = max(last_a, data["a"])
                    else:
                        event = data["u"] - BOOK_ID_OFFSET
                        if event > last_a:  # the quote of an aggregate not yet received
                            seen["reorder"] = True
                        assert data["u"] > last_book  # per-stream order always holds
                        last_book = data["u"]
        return seen

    assert run(scenario()) == {"duplicate": True, "malformed": True, "reorder": True}
    after = sim.stats()["faults"]
    for kind in ("duplicate", "malformed", "reorder"):
        assert after[kind] == before[kind] + 1


@pytest.mark.parametrize("kind", ["disconnect", "slowreader"])
def test_abrupt_drops_send_no_close_frame(sim: Sim, kind: str):
    before = sim.stats()["faults"][kind]

    async def scenario():
        async with connect(f"{sim.ws}/stream?streams=ethusdt@trade") as ws:
            await ws.recv()
            await asyncio.to_thread(sim.trigger, kind)
            with pytest.raises(websockets.ConnectionClosedError) as closed:
                while True:
                    await ws.recv()
            return closed.value

    closed = run(scenario())
    assert closed.rcvd is None  # the TCP connection just went away
    assert sim.stats()["faults"][kind] == before + 1


def test_shutdown_sends_server_shutdown_then_closes(sim: Sim):
    async def scenario():
        async with connect(f"{sim.ws}/stream?streams=btcusdt@aggTrade") as ws:
            await ws.recv()
            await asyncio.to_thread(sim.trigger, "shutdown", 0.3)
            events = []
            with pytest.raises(websockets.ConnectionClosedOK) as closed:
                while True:
                    events.append(orjson.loads(await ws.recv()))
            return events, closed.value

    events, closed = run(scenario())
    notices = [e for e in events if e.get("e") == "serverShutdown"]
    assert len(notices) == 1 and isinstance(notices[0]["E"], int)
    assert closed.rcvd.code == 1001
    assert sim.stats()["faults"]["shutdown"] >= 1


def test_stall_holds_frames_and_pongs_then_delivers_them_in_order(sim: Sim):
    before = sim.stats()["faults"]["stall"]

    async def scenario():
        async with connect(f"{sim.ws}/stream?streams=btcusdt@aggTrade") as ws:
            ids = [orjson.loads(await ws.recv())["data"]["a"]]
            await asyncio.to_thread(sim.trigger, "stall", 1.5)
            await asyncio.sleep(0.8)
            ping_ms = time.time() * 1000
            pong = await ws.ping()
            held = 0  # frames generated before our ping that arrive only after it
            while True:
                data = orjson.loads(await ws.recv())["data"]
                ids.append(data["a"])
                if data["E"] >= ping_ms:
                    break
                held += 1
            await asyncio.wait_for(pong, 10)  # answered once the stall is over
            return ids, held

    ids, held = run(scenario())
    # ~0.8 s of a 200/s stream was held back by the stall; a server that is not stalled has
    # at most a few frames in flight when the ping leaves.
    assert held > 50
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # late, but nothing lost
    assert sim.stats()["faults"]["stall"] == before + 1


def test_cli_fault_schedule_and_runtime_replacement(sims):
    sim = sims["faults"]  # duplicate:2,malformed:2,reorder:2 with ~30 frames between

    async def scenario():
        counts = {"duplicate": 0, "malformed": 0, "reorder": 0}
        async with connect(f"{sim.ws}/stream?streams=btcusdt@aggTrade/btcusdt@bookTicker") as ws:
            last_a = 0
            # Each fault fires within 2 * 30 frames of the previous one: 400 frames see all.
            for _ in range(400):
                raw = await ws.recv()
                if _bad(raw):
                    counts["malformed"] += 1
                    continue
                data = orjson.loads(raw)["data"]
                if "e" in data:
                    counts["duplicate"] += data["a"] <= last_a
                    last_a = max(last_a, data["a"])
                elif data["u"] - BOOK_ID_OFFSET > last_a:
                    counts["reorder"] += 1
            # Replace the schedule at runtime: one abrupt disconnect soon.
            await asyncio.to_thread(sim.http, "/_sim/faults", {"spec": "disconnect:1"})
            with pytest.raises(websockets.ConnectionClosedError) as closed:
                while True:
                    await ws.recv()
            assert closed.value.rcvd is None
        return counts

    counts = run(scenario())
    assert counts == {"duplicate": 2, "malformed": 2, "reorder": 2}
    faults = sim.stats()["faults"]
    assert (faults["duplicate"], faults["malformed"], faults["reorder"], faults["disconnect"]) == (
        2,
        2,
        2,
        1,
    )
    status, _, error = sim.http("/_sim/faults", {"spec": "explode:1"})
    assert status == 400 and "explode" in error["msg"]


def missing_runs(ids: list[int]) -> list[list[int]]:
    """The runs of ids absent between consecutive ids of a stream."""
    return [list(range(a + 1, b)) for a, b in itertools.pairwise(ids) if b > a + 1]


def test_drops_leave_out_trade_frames_silently_and_rest_has_them():
    # Three firings of four frames each, ~30 frames apart; then one triggered firing of two.
    sim = _start("--rate", "300", "--seed", "9", "--fault-gap", "30", "--faults", "drops:3:4")
    try:
        # Paused while the client connects, so the id before its first frame is known.
        sim.http("/_sim/market", {"paused": True})

        async def scenario():
            async with connect(f"{sim.ws}/stream?streams=btcusdt@aggTrade") as ws:
                before = (await asyncio.to_thread(sim.stats))["last_agg_id"]["BTCUSDT"]
                await asyncio.to_thread(sim.http, "/_sim/market", {"paused": False})
                scheduled = [orjson.loads(await ws.recv())["data"]["a"] for _ in range(250)]
                await asyncio.to_thread(sim.trigger, "drops", 2)
                triggered = [orjson.loads(await ws.recv())["data"]["a"] for _ in range(20)]
                return [before, *scheduled], triggered  # the connection never closed

        scheduled, triggered = run(scenario())
        # Firings closer than four frames apart leave out one longer run.
        runs = [len(run) for run in missing_runs(scheduled)]
        assert sum(runs) == 12 and all(n % 4 == 0 for n in runs), runs
        assert [len(run) for run in missing_runs([scheduled[-1], *triggered])] == [2]
        stats = sim.stats()
        assert stats["faults"]["drops"] == 4 and stats["frames_dropped"] == 14, stats
        assert stats["connections_total"] == 1 and stats["faults"]["disconnect"] == 0
        # What was left out was published: REST answers it, the client can recover it.
        lost = [a for run in missing_runs(scheduled) for a in run]
        rows = sim.get(f"/api/v3/aggTrades?symbol=BTCUSDT&fromId={lost[0]}&limit=1000")
        assert set(lost) <= {r["a"] for r in rows}
        status, _, error = sim.http("/_sim/faults", {"spec": "drops:1:1.5"})
        assert status == 400 and "drops:1:1.5" in error["msg"], error
        status, _, body = sim.http("/_sim/faults", {"spec": "drops:2:3"})
        assert status == 200 and body["faults"][0]["kind"] == "drops", body
    finally:
        _stop(sim)
