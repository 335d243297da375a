"""Depth books against ``quant sim binance`` as a real subprocess: ``<symbol>@depth@100ms`` over a
real WebSocket, ``/api/v3/depth`` over HTTP, the sync machine in between, and the simulator's
depth faults (a missing diff, a stale snapshot, a reconnect in the middle of a sync)."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
import websockets

from quant_core.depth_sync import (
    DEPTH_SNAPSHOT_WEIGHT,
    GAP,
    IN_SYNC,
    RESTART,
    STALE_SNAPSHOT,
    DepthBooks,
)
from tests.test_binance_sim import Sim, sims  # noqa: F401 - sims: the simulators, a fixture

pytestmark = pytest.mark.xdist_group("binance_sim")


@pytest.fixture
def sim(sims) -> Sim:  # noqa: F811 - the fixture imported above
    return sims["main"]


class Driver:
    """What the live driver will do, in a test: frames in, REST answers for the requests,
    answered after ``delay`` more depth frames (0: at once)."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.books = DepthBooks(["BTCUSDT"], depth=5, interval_ms=1000)
        self.snapshots, self.resyncs, self.tickers = [], [], set()
        self.pending: list = []
        self.delay = 0
        self.waited = 0

    def feed(self, item: tuple) -> None:
        self.books.feed(item)
        out = self.books.take()
        self.snapshots += out.snapshots
        self.resyncs += out.resyncs
        self.pending += out.requests
        if self.pending and self.waited >= self.delay:
            req = self.pending.pop(0)
            self.waited = 0
            body = orjson.dumps(
                self.sim.get(f"/api/v3/depth?symbol={req.symbol}&limit={req.limit}")
            )
            self.feed(("snapshot", req.symbol, req.request_id, body))

    async def run(self, until, timeout: float = 30.0, between=None) -> None:
        """Stream until ``until()`` holds; reconnect (a ``connect`` input) when dropped."""
        deadline = time.monotonic() + timeout
        while not until():
            url = f"{self.sim.ws}/stream?streams=btcusdt@depth@100ms/btcusdt@bookTicker"
            async with websockets.connect(url, max_size=None) as ws:
                self.feed(("connect",))
                try:
                    while not until():
                        assert time.monotonic() < deadline, f"gave up: {self.resyncs}"
                        raw = await asyncio.wait_for(ws.recv(), 10)
                        raw = raw if isinstance(raw, bytes) else raw.encode()
                        if b"@bookTicker" in raw[:40]:
                            d = orjson.loads(raw)["data"]
                            self.tickers.add((d["b"], d["a"]))
                        elif b"@depth" in raw[:40]:
                            self.waited += 1
                            self.feed(("frames", [raw]))
                        if between is not None:
                            between(self)
                except websockets.ConnectionClosed:
                    continue


def _fmt(units: int) -> str:
    return f"{units // 10**8}.{units % 10**8:08d}"


def test_books_sync_against_the_simulator_and_follow_its_book_ticker(sim: Sim) -> None:
    drv = Driver(sim)
    asyncio.run(drv.run(lambda: len(drv.snapshots) >= 4))
    state = drv.books.states["BTCUSDT"]
    assert state.state == IN_SYNC and drv.resyncs == []
    assert drv.books.decoder.rejects == {}
    for snap in drv.snapshots:
        assert snap.bid_price[0] < snap.ask_price[0] and snap.bids_known and snap.asks_known
    # The depth book's top is the book ticker the simulator sent before the diff.
    tops = {(_fmt(s.bid_price[0]), _fmt(s.ask_price[0])) for s in drv.snapshots}
    assert tops <= drv.tickers
    _, headers, _ = sim.http("/api/v3/depth?symbol=BTCUSDT&limit=5000")
    before = int(headers["X-MBX-USED-WEIGHT-1M"])
    _, headers, _ = sim.http("/api/v3/depth?symbol=BTCUSDT&limit=5000")
    assert int(headers["X-MBX-USED-WEIGHT-1M"]) - before == DEPTH_SNAPSHOT_WEIGHT


def test_simulator_depth_faults_resync_the_books(sim: Sim) -> None:
    """On one connection: a missing diff with a stale answer to the resync request, then a
    reconnect while the next resync waits for its REST answer."""
    drv = Driver(sim)
    phase = [0]
    restart_at = [0]

    def reasons() -> list[str]:
        return [r.reason for r in drv.resyncs]

    def in_sync() -> bool:
        return drv.books.states["BTCUSDT"].state == IN_SYNC

    def step(d: Driver) -> None:
        if phase[0] == 0 and len(d.snapshots) >= 2:
            assert sim.http("/_sim/depth", {"drop": 1, "stale": 1})[0] == 200
            phase[0] = 1
        elif phase[0] == 1 and GAP in reasons() and STALE_SNAPSHOT in reasons() and in_sync():
            d.delay = 10**9  # the next resync's REST answer is held back
            assert sim.http("/_sim/depth", {"drop": 1})[0] == 200
            phase[0] = 2
        elif phase[0] == 2 and d.pending:
            sim.trigger("disconnect")  # the stream drops before the REST answer is in
            restart_at[0] = len(d.snapshots)
            phase[0] = 3
        elif phase[0] == 3 and RESTART in reasons():
            d.delay = 3  # now the held answer (to a request of the old connection) goes in
            phase[0] = 4

    def done() -> bool:
        return phase[0] == 4 and in_sync() and len(drv.snapshots) > restart_at[0] + 1

    asyncio.run(drv.run(done, timeout=60, between=step))
    assert reasons()[:2] == [GAP, STALE_SNAPSHOT] and RESTART in reasons()
    assert drv.books.ignored_answers >= 1  # the answer to the request before the reconnect
    assert drv.books.decoder.rejects == {}
