"""Books inside the kernel, both drivers (issues 14 and 16): one mixed depth stream - good diffs of
two symbols among trades, bad diffs, a gap, stale and refused REST snapshots, a reconnect - goes
through the live driver (``LivePipeline``: session log, kernel, sinks) and, from the session
log it wrote, through the replay driver. Everything they emit must be equal: trades, bars,
rejects, and the books' update rows, snapshots, resyncs and snapshot requests.

The live driver is fed directly (as in ``test_kernel_bad_input``): its REST client points at a
closed port, so the snapshot fetches it schedules fail; the test answers each request the
kernel made instead, through the same entry point the fetcher's answers take."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import orjson

from quant_core.book_tables import book_snapshots_table
from quant_core.depth_decode import DEPTH_PATH
from quant_core.kernel import KernelOutput
from quant_core.replay import replay
from quant_dev.binance_sim.depth import DepthMarket
from quant_resources.binance.stream import RawFrame
from quant_resources.live.pipeline import LiveConfig, LivePipeline, RestAnswer
from quant_resources.session_log_thread import SessionLogThread  # live3
from quant_resources.session_writer import SessionWriter
from tests.test_kernel_bad_input import (
    MINUTE,
    T0,
    RecordingSink,
    _closed_port,
    agg,
    flatten,
    replay_outputs,
)

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
UPDATE_COLUMNS = ("symbol", "first_update_id", "last_update_id", "ts_event", "side", "price", "qty")


def spoil(frame: bytes, qty: str) -> bytes:
    doc = orjson.loads(frame)
    side = "b" if doc["data"]["b"] else "a"
    doc["data"][side][0][1] = qty
    return orjson.dumps(doc)


def unsorted(body: bytes) -> bytes:
    doc = orjson.loads(body)
    doc["bids"][1], doc["bids"][2] = doc["bids"][2], doc["bids"][1]
    return orjson.dumps(doc)


class Stream:
    """Builds the live driver's inputs step by step; REST answers answer the newest request the
    kernel emitted for their symbol (read from the recording sink, as the fetcher would)."""

    def __init__(self, pipeline: LivePipeline, sink: RecordingSink) -> None:
        self.pipeline, self.sink = pipeline, sink
        self.markets = {s: DepthMarket(s, seed=3 + i, levels=60, changes=4) for i, s in
                        enumerate(SYMBOLS)}  # fmt: skip
        self.recv = 1_000
        self.ts = T0
        self.trade_id = 0

    def frames(self, payloads: list[bytes]) -> None:
        frames = []
        for data in payloads:
            self.recv += 1
            frames.append(RawFrame(self.recv, 1, data))
        self.pipeline._on_frames(frames)

    def diff(self, symbol: str) -> bytes:
        self.ts += 40
        m = self.markets[symbol]
        return m.frame(m.step(self.ts))

    def burst(self, n: int, extra: list[bytes] = ()) -> None:
        """n diffs of each symbol with a trade between them, then ``extra``."""
        payloads = []
        for _ in range(n):
            self.trade_id += 1
            payloads += [self.diff("BTCUSDT"), agg(self.trade_id, self.ts), self.diff("ETHUSDT")]
        self.frames(payloads + list(extra))

    def outputs(self) -> list:
        """live3: the sink's outputs and those waiting for the log's fsync (not staged yet)."""
        return [*self.sink.outputs, *(out for _, out in self.pipeline._unstaged)]

    def request_id(self, symbol: str) -> int:
        requests = [
            r for out in self.outputs() if out.books is not None
            for r in out.books.output.requests if r.symbol == symbol
        ]  # fmt: skip
        return requests[-1].request_id

    def answer(self, symbol: str, body: bytes | None = None) -> None:
        self.recv += 1
        body = self.markets[symbol].snapshot(5000) if body is None else body
        params = {"symbol": symbol, "limit": 5000}
        item = RestAnswer(symbol, "depth", DEPTH_PATH, params, body, self.recv)
        item.request_id = self.request_id(symbol)
        self.pipeline._apply_rest(item)


def run_live(
    tmp_path: Path, sinks: dict | None = None, at_end: Callable[..., Awaitable] | None = None
) -> tuple[list[KernelOutput], Path, dict]:
    """The stream through the live driver; ``sinks`` go beside the recording one, ``at_end``
    is awaited (with the pipeline) after the last input, before the stop."""
    port = _closed_port()
    config = LiveConfig(
        symbols=SYMBOLS,
        streams=["aggTrade", "depth"],
        ws_url=f"ws://127.0.0.1:{port}",
        rest_url=f"http://127.0.0.1:{port}",
        session_root=tmp_path / "sessions",
        session_id="books-both-drivers",
        book_depth=5,
        book_interval_ms=200,
    )
    pipeline = LivePipeline(config, warehouse=None)
    sink = RecordingSink()
    pipeline.sinks = {"record": sink, **(sinks or {})}
    s = Stream(pipeline, sink)
    eth = s.markets["ETHUSDT"]

    async def drive() -> None:
        pipeline.log = SessionLogThread(  # live3: the log's own thread, as in live
            SessionWriter(
                config.session_root, config.session_id, "binance", config.streams, SYMBOLS, "t"
            ),
            asyncio.get_running_loop(),
        )
        pipeline._record_settings()
        stale = eth.snapshot(5000)  # older than ETH's first buffered diff
        s.burst(2)
        s.answer("BTCUSDT")
        s.answer("ETHUSDT", stale)  # stale_snapshot: asked again
        s.answer("ETHUSDT")
        s.burst(8, [b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":'])
        s.frames([spoil(s.diff("BTCUSDT"), "NaN")])  # rejected: a hole, then a gap
        s.burst(3)
        s.answer("BTCUSDT", unsorted(s.markets["BTCUSDT"].snapshot(5000)))  # refused
        s.burst(1)
        s.answer("BTCUSDT")
        s.diff("ETHUSDT")  # never sent: ETH's next diff shows a gap
        s.burst(6)
        s.answer("ETHUSDT")
        s.burst(6)
        pipeline._restart("open", "")  # a new connection after a drop: every book restarts
        s.burst(2)
        s.answer("ETHUSDT")
        s.answer("BTCUSDT")
        s.burst(10)
        await pipeline.log.durable()  # live3: fsynced, then staged (the write-ahead gate)
        pipeline._stage_durable()  # live3
        if at_end is not None:
            await at_end(pipeline)
        await pipeline._stop_repairs()
        await pipeline.snapshots.close()
        stop_ms = s.ts // MINUTE * MINUTE
        pipeline._emit(pipeline.kernel.flush(stop_ms))
        await pipeline.log.durable()  # live3
        pipeline._stage_durable()  # live3
        pipeline.log.close(stop_ms)

    asyncio.run(drive())
    return sink.outputs, config.session_root / config.session_id, pipeline.summary.books


def book_parts(outputs: list[KernelOutput]) -> dict[str, list]:
    """The books' output, in order, with symbols as names; receive times left out (they are
    the live driver's input, which the replay reader does not hand back)."""
    got: dict[str, list] = {"updates": [], "snapshots": [], "resyncs": [], "requests": []}
    for out in outputs:
        if out.books is None:
            continue
        b = out.books.output
        cols = [b.updates[c].tolist() for c in UPDATE_COLUMNS]
        got["updates"] += [(b.symbols[row[0]], *row[1:]) for row in zip(*cols, strict=True)]
        got["snapshots"] += b.snapshots
        got["resyncs"] += b.resyncs
        got["requests"] += b.requests
    return got


def test_live_and_replay_emit_the_same_books(tmp_path: Path) -> None:
    live_outputs, session, live_counts = run_live(tmp_path)
    replay_out, driver = replay_outputs(session)

    live, again = flatten(live_outputs), flatten(replay_out)
    for key in ("trades", "bars", "gaps", "rejects"):
        assert again[key] == live[key], key
    live_books, replay_books = book_parts(live_outputs), book_parts(replay_out)
    for key in ("updates", "snapshots", "resyncs", "requests"):
        assert replay_books[key] == live_books[key], key
    counts = driver.kernel.books.counts
    assert counts == live_counts  # the summary's counts (time in sync too: exchange time)

    # The stream exercised what it claims to.
    assert counts["updates"] == len(live_books["updates"])
    assert counts["snapshot_requests"] == len(live_books["requests"])
    assert counts["faults"] == {"stale_snapshot": 1, "bad_snapshot": 1, "gap": 2, "restart": 2}
    assert counts["rejects"] == {"malformed_json": 1, "bad_number": 1}
    assert counts["snapshot_rejects"] == {"bad_field": 1}
    assert {r.symbol for r in live_books["requests"]} == set(SYMBOLS)
    snapshots = live_books["snapshots"]
    assert len(snapshots) > 10 and {s.symbol for s in snapshots} == set(SYMBOLS)
    assert len({(s.symbol, s.synced_from) for s in snapshots}) == 6  # every sound answer synced
    assert all(not s.bid_price or s.bid_price[0] < s.ask_price[0] for s in snapshots)
    updates = np.array([u[2] for u in live_books["updates"]])
    assert len(updates) > 100
    assert [t[2] for t in live["trades"]] == list(range(1, 39))  # trades unaffected by books

    # The public replay gives the same book_snapshots table the live sinks got.
    table = book_snapshots_table(snapshots, "binance")
    result = replay(session)
    assert result.book_snapshots.equals(table)
    assert result.summary["books"]["snapshots"] == len(snapshots)
