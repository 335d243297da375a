"""Bad input, both drivers: the same mixed stream of good and bad frames goes through the live
driver (``LivePipeline``: session log, kernel, sinks) and, from the session log it wrote,
through the replay driver; everything they emit must be equal - trades, quotes, bars with
their versions, gaps and rejects (issue 14, "Bad input").

The live driver is fed directly (its entry points for a burst of frames, a REST answer, a
heartbeat and a seed), so the test needs no network: its REST client points at a closed port
and the repairs it schedules for the gaps fail, as they would with the exchange unreachable;
the repair answers are handed in as REST answers at fixed places instead."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import numpy as np
import orjson

from quant_core.kernel import FROM_WAREHOUSE, KernelOutput
from quant_core.replay import ReplayDriver, replay
from quant_core.rest_decode import AGG_TRADES_PATH
from quant_core.sessionlog.format import RecordKind
from quant_core.sessionlog.reader import SessionReader
from quant_resources.binance.stream import RawFrame
from quant_resources.live.pipeline import LiveConfig, LivePipeline, RestAnswer
from quant_resources.session_log_thread import SessionLogThread  # live3
from quant_resources.session_writer import SessionWriter
from tests.test_decode import REJECT_CASES

T0 = 1723127400000  # a minute start
MINUTE = 60_000


class RecordingSink:
    """A ``Sink`` that keeps every output staged in it."""

    prompt = False

    def __init__(self) -> None:
        self.outputs: list[KernelOutput] = []

    async def start(self) -> None:
        return None

    def stage(self, out: KernelOutput) -> None:
        self.outputs.append(out)

    def buffered(self) -> int:
        return 0

    def due(self, force: bool = False) -> bool:
        return False

    def release(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def stats(self) -> dict[str, int]:
        return {}


def agg(a: int, ts: int, price: str = "100.00000000", symbol: str = "BTCUSDT", **extra) -> bytes:
    data = {
        "e": "aggTrade", "E": ts, "s": symbol, "a": a, "p": price, "q": "0.50000000",
        "f": 10 * a, "l": 10 * a + 1, "T": ts, "m": a % 3 == 0, "M": True, **extra,
    }  # fmt: skip
    return orjson.dumps({"stream": f"{symbol.lower()}@aggTrade", "data": data})


def book(u: int, bid: str = "99.00000000", ask: str = "101.00000000", symbol="ETHUSDT") -> bytes:
    data = {"u": u, "s": symbol, "b": bid, "B": "1.00000000", "a": ask, "A": "2.00000000"}
    return orjson.dumps({"stream": f"{symbol.lower()}@bookTicker", "data": data})


def rest_page(ids: range, ts: int) -> bytes:
    """An aggTrades answer; trade ``a`` at ``ts + a``."""
    return orjson.dumps(
        [
            {"a": a, "p": "100.50000000", "q": "0.25000000", "f": 10 * a, "l": 10 * a,
             "T": ts + a, "m": False, "M": True}
            for a in ids
        ]
    )  # fmt: skip


def mixed_stream() -> list[tuple]:
    """(kind, ...) steps in log order: bursts of frames, REST answers, heartbeats, a seed."""
    bad = [frame for frame, _ in REJECT_CASES]
    out_of_range = [
        agg(5, 253_402_300_800_000),  # T beyond year 9999
        agg(-1, T0),  # negative id
        agg(6, T0, price="1.000000001"),  # finer than 10**-8
        book(3, bid="102.00000000"),  # crossed
        agg(7, T0, symbol="XRPUSDT"),  # not subscribed
        b'{"result":null,"id":1}',  # a control frame, not an error
        b"\xff\xfe",
        b"",
    ]
    steps: list[tuple] = []
    ids = iter(range(1, 10_000))
    first: list[bytes] = []
    for i in range(40):  # minute 0: good trades, book tickers, bad frames between them
        a = next(ids)
        first.append(agg(a, T0 + 1000 * i, price=f"{100 + i % 7}.00000000"))
        if i % 5 == 0:
            first.append(book(10 + i))
        if i % 3 == 0:
            first.append(bad[i % len(bad)])
        if i % 11 == 0:
            first.append(out_of_range[(i // 11) % len(out_of_range)])
    first.append(agg(3, T0 + 2000))  # a duplicate id
    first.append(book(12))  # a stale quote (older update id)
    steps.append(("frames", first))
    # A conn record between the bursts (the log then splits them where live did).
    steps.append(("seed", "ETHUSDT", "aggTrade", 499, T0 - 1))
    # Minute 1: ids 41-60 are lost (a gap), the ETH series after its seed, and rejects.
    second = [agg(a, T0 + MINUTE + 500 * (a - 60)) for a in range(61, 100)]
    second.insert(5, agg(500, T0 + MINUTE + 10, symbol="ETHUSDT"))
    second.insert(9, agg(502, T0 + MINUTE + 20, symbol="ETHUSDT"))  # ETH gap: 501
    second[12:12] = out_of_range + bad[:5]
    steps.append(("frames", second))
    steps.append(("clock", T0 + 2 * MINUTE + 5000))  # the exchange's clock: minute 0 closes
    steps.append(("rest", "BTCUSDT", b"[1,2"))  # a broken answer: rejected
    steps.append(("rest", "BTCUSDT", rest_page(range(41, 61), T0 + 40_000)))  # the repair
    third = [agg(a, T0 + 2 * MINUTE + 300 * (a - 100)) for a in range(100, 160)]
    # An id ahead of its place: it opens a gap the frames after it fill, and its own later
    # copy is a duplicate.
    third[30:30] = [*bad[-6:], agg(150, T0 + 2 * MINUTE)]
    steps.append(("frames", third))
    # ETH 501 re-applied from the warehouse (a resume): into the bars, not out as a new trade.
    steps.append(("stored", "ETHUSDT", rest_page(range(501, 502), T0 + MINUTE - 486)))
    steps.append(("clock", T0 + 4 * MINUTE))
    return steps


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_live(tmp_path: Path, steps: list[tuple], stop_ms: int) -> tuple[list, Path]:
    port = _closed_port()
    config = LiveConfig(
        symbols=["BTCUSDT", "ETHUSDT"],
        streams=["aggTrade", "bookTicker"],
        ws_url=f"ws://127.0.0.1:{port}",
        rest_url=f"http://127.0.0.1:{port}",
        session_root=tmp_path / "sessions",
        session_id="bad-input",
    )
    pipeline = LivePipeline(config, warehouse=None)
    sink = RecordingSink()
    pipeline.sinks = {"record": sink}

    async def drive() -> None:
        pipeline.log = SessionLogThread(  # live3: the log's own thread, as in live
            SessionWriter(
                config.session_root,
                config.session_id,
                "binance",
                config.streams,
                config.symbols,
                "t",
            ),
            asyncio.get_running_loop(),
        )
        recv = 1_000
        for step in steps:
            if step[0] == "frames":
                frames = []
                for data in step[1]:
                    recv += 1
                    frames.append(RawFrame(recv, 1, data))
                pipeline._on_frames(frames)
            elif step[0] in ("rest", "stored"):
                params = {"symbol": step[1]}
                if step[0] == "stored":
                    params["origin"] = FROM_WAREHOUSE
                pipeline._apply_rest(
                    RestAnswer(step[1], "aggTrade", AGG_TRADES_PATH, params, step[2], recv)
                )
            elif step[0] == "clock":
                pipeline._heartbeat(step[1])
            else:
                pipeline._seed(*step[1:])
        await pipeline._stop_repairs()  # the repairs it scheduled (REST unreachable) end
        pipeline._emit(pipeline.kernel.flush(stop_ms))
        await pipeline.log.durable()  # live3: fsynced, then staged (the write-ahead gate)
        pipeline._stage_durable()  # live3
        pipeline.log.close(stop_ms)

    asyncio.run(drive())
    return sink.outputs, config.session_root / config.session_id


def flatten(outputs: list[KernelOutput]) -> dict[str, list]:
    """Everything emitted, in order, with symbols as names (codes are each kernel's own)."""
    got: dict[str, list] = {"trades": [], "quotes": [], "bars": [], "gaps": [], "rejects": []}
    for out in outputs:
        names = out.symbols
        t = out.trades
        for row in zip(*(getattr(t, f).tolist() for f in ("code", "kind", "trade_id", "first",
                       "last", "price", "qty", "ts", "maker")), strict=True):  # fmt: skip
            got["trades"].append((names[row[0]], *row[1:]))
        q = out.quotes
        for row in zip(*(getattr(q, f).tolist() for f in ("code", "update_id", "bid", "bid_qty",
                       "ask", "ask_qty", "ts")), strict=True):  # fmt: skip
            got["quotes"].append((names[row[0]], *row[1:]))
        got["bars"].extend(out.bars)
        got["gaps"].extend(out.gaps)
        got["rejects"].extend(kind for _, kind in out.rejects)
    return got


def replay_outputs(session: Path) -> tuple[list[KernelOutput], ReplayDriver]:
    """The replay driver over the session log, keeping every output."""
    reader = SessionReader(session)
    driver: ReplayDriver | None = None
    for kind, meta, payloads in reader.batches():
        if driver is None:
            header = reader.info.header
            driver = ReplayDriver(header.symbols, streams=header.streams, keep_outputs=True)
        if kind == RecordKind.WS:
            driver.on_ws_many(payloads)
        elif kind == RecordKind.REST:
            driver.on_rest(payloads[0], orjson.loads(meta))
        else:
            driver.on_conn(orjson.loads(meta) if meta else {})
    assert driver is not None and reader.info.footer is not None
    driver.finish(reader.info.footer.stop_exchange_ms)
    return driver.outputs, driver


def test_live_and_replay_emit_the_same_for_good_and_bad_frames(tmp_path: Path) -> None:
    steps = mixed_stream()
    stop_ms = T0 + 4 * MINUTE
    live_outputs, session = run_live(tmp_path, steps, stop_ms)
    replay_out, driver = replay_outputs(session)
    live, again = flatten(live_outputs), flatten(replay_out)

    for key in ("trades", "quotes", "bars", "gaps", "rejects"):
        assert again[key] == live[key], key

    # The stream exercised what it claims to: every reject kind, duplicates, both gaps and
    # their holding, a stale quote, a broken REST answer.
    kinds = set(live["rejects"])
    assert {kind for _, kind in REJECT_CASES} <= kinds
    assert {"unsubscribed_symbol", "bad_rest_answer"} <= kinds
    assert [(g.symbol, g.first_id, g.last_id) for g in live["gaps"]] == [
        ("BTCUSDT", 41, 60),
        ("ETHUSDT", 501, 501),
        ("BTCUSDT", 130, 149),
    ]
    assert driver.counts["duplicate_trade"] == 2
    btc = [t for t in live["trades"] if t[0] == "BTCUSDT"]
    assert sorted(t[2] for t in btc) == list(range(1, 160))  # each id once, repaired ones too
    assert [q[1] for q in live["quotes"]] == sorted({10 + i for i in range(0, 40, 5)})
    # Minute 0 was held while ids 41-60 were missing (the exchange's clock had passed it):
    # its bar is final once, with them in it, never a short bar corrected later.
    minute0 = [b for b in live["bars"] if b.symbol == "BTCUSDT" and b.open_time_ms == T0]
    assert [b.version for b in minute0] == [1]
    assert minute0[0].trade_count == 2 * 40 + 20  # ids 1-40 (f..l: 2 each) and 41-60 (1 each)
    eth = [t[2] for t in live["trades"] if t[0] == "ETHUSDT"]
    assert eth == [500, 502]  # 501 came from the warehouse: in the bar, not a new trade
    eth_bar = [b for b in live["bars"] if b.symbol == "ETHUSDT"][-1]
    assert eth_bar.open_time_ms == T0 + MINUTE and eth_bar.trade_count == 2 + 1 + 2
    bars = {(b.symbol, b.open_time_ms): b for b in live["bars"]}
    assert np.all([b.open_time_ms + MINUTE <= stop_ms for b in bars.values()])

    # The public replay of the same session agrees with the live outputs' final bars.
    result = replay(session)
    assert result.bars.num_rows == len(bars)
    frame_rejects = [k for k in live["rejects"] if k != "bad_rest_answer"]
    assert result.summary["events"]["rejected"] == len(frame_rejects)
