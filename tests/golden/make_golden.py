"""Generate the golden session: ``python -m tests.golden.make_golden`` (deterministic, seeded).

A Binance spot session of about 5.5 minutes of exchange time: BTCUSDT and ETHUSDT, aggTrade and
bookTicker on one combined stream, a subscription ack, one malformed frame, and a connection
drop across a minute boundary: the trades of the outage are missed, the new connection repeats
the last trade it had delivered, and two REST ``/api/v3/aggTrades`` answers (one per symbol,
overlapping what was already received) repair the gap after the bar of that minute was
emitted, so the repair re-versions it.

The expected bars are NOT taken from replay: they are the batch ``aggregate_trades`` over the
ground-truth trades (every trade the generated exchange made, once), cut at the stop time. A
replay that matches them has applied the repair and dropped the duplicates.

Files written to this directory: ``golden-binance-spot-20240808/`` (the session),
``expected_bars.parquet``, ``expected_summary.json`` (the replay summary, timing excluded).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quant_core.bars import aggregate_trades
from quant_core.replay import TRADES_SCHEMA, compare_bars, replay
from quant_core.tables import TS, decimal_from_scaled
from quant_resources.session_writer import SessionWriter

HERE = Path(__file__).parent
SESSION_ID = "golden-binance-spot-20240808"
SEED = 20240808
T0_MS = 1_723_127_400_000  # 2024-08-08T14:30:00Z
DURATION_MS = 330_500
OUTAGE_MS = (178_200, 184_100)  # offsets from T0: connection 1 drops, connection 2 resumes
URL = (
    "wss://stream.binance.com:9443/stream?streams="
    "btcusdt@aggTrade/btcusdt@bookTicker/ethusdt@aggTrade/ethusdt@bookTicker"
)
SYMBOLS = {
    # symbol: (start price in cents, aggregate id, first trade id, book update id)
    "BTCUSDT": (5_612_345, 3_100_000_001, 3_700_000_010, 48_000_000_123),
    "ETHUSDT": (257_110, 900_000_001, 1_400_000_050, 31_000_000_777),
}
WRITER = {"rotate_bytes": 24_000, "checkpoint_every": 64}


@dataclass
class Trade:
    symbol: str
    a: int
    f: int
    l: int  # noqa: E741 - Binance's field name
    price_cents: int
    qty_e8: int
    t_ms: int
    m: bool

    def row(self) -> dict:
        return {
            "a": self.a,
            "p": _dec(self.price_cents * 10**6),
            "q": _dec(self.qty_e8),
            "f": self.f,
            "l": self.l,
            "T": self.t_ms,
            "m": self.m,
            "M": True,
        }

    def frame(self) -> bytes:
        data = {"e": "aggTrade", "E": self.t_ms + 3, "s": self.symbol, **self.row()}
        return orjson.dumps({"stream": f"{self.symbol.lower()}@aggTrade", "data": data})


def _dec(e8: int) -> str:
    return f"{e8 // 10**8}.{e8 % 10**8:08d}"


def _book(symbol: str, u: int, price_cents: int, rng: random.Random) -> bytes:
    data = {
        "u": u,
        "s": symbol,
        "b": _dec((price_cents - 1) * 10**6),
        "B": _dec(rng.randint(1, 300) * 10**6),
        "a": _dec(price_cents * 10**6),
        "A": _dec(rng.randint(1, 300) * 10**6),
    }
    return orjson.dumps({"stream": f"{symbol.lower()}@bookTicker", "data": data})


def simulate() -> tuple[list[tuple], list[Trade], int]:
    """-> (records to append, ground-truth trades, stop_exchange_ms)."""
    rng = random.Random(SEED)
    state = {s: list(v) for s, v in SYMBOLS.items()}
    truth: list[Trade] = []
    records: list[tuple] = []  # (kind, conn_id, recv_ns, payload, meta)
    recv = [T0_MS * 1_000_000 - 900_000_000]
    conn = 1

    def emit(kind: str, t_ms: int, payload: bytes, meta: dict | None = None) -> None:
        # Frames of one connection arrive in order: receive times never go backwards.
        ns = max(recv[0] + 1_000, t_ms * 1_000_000 + rng.randint(2_000_000, 40_000_000))
        recv[0] = ns
        records.append((kind, conn, ns, payload, meta))

    emit("conn", T0_MS - 900, b"", {"event": "open", "url": URL})
    emit("ws", T0_MS - 850, b'{"result":null,"id":1}')
    offset = 0
    delivered: dict[str, Trade] = {}
    reconnected = malformed = False
    while True:
        offset += rng.randint(150, 1500)
        if offset >= DURATION_MS:
            break
        t = T0_MS + offset
        symbol = rng.choice(sorted(state))
        price, a, f, u = state[symbol]
        outage = OUTAGE_MS[0] <= offset < OUTAGE_MS[1]
        if offset >= OUTAGE_MS[1] and not reconnected:
            reconnected = True
            emit("conn", t, b"", {"event": "close", "reason": "ping timeout"})
            conn = 2
            emit("conn", t, b"", {"event": "reconnect", "url": URL, "previous_conn_id": 1})
            emit("ws", t, b'{"result":null,"id":1}')
            emit("ws", t, delivered["BTCUSDT"].frame())  # the new connection repeats it
        if offset > 60_000 and not malformed:
            malformed = True
            # A frame cut short on the wire: recorded as received, rejected by the decoder.
            emit("ws", t, b'{"stream":"ethusdt@aggTrade","data":{"e"')
        if rng.random() < 0.66:
            price = max(100, price + rng.randint(-40, 40))
            last = f + rng.choice((0, 0, 0, 1, 2))
            qty = rng.randint(1, 5_000) * 10**4
            trade = Trade(symbol, a, f, last, price, qty, t, rng.random() < 0.5)
            truth.append(trade)
            state[symbol] = [price, a + 1, last + 1, u]
            if not outage:
                emit("ws", t, trade.frame())
                delivered[symbol] = trade
        else:
            state[symbol] = [price, a, f, u + rng.randint(1, 9)]
            if not outage:
                emit("ws", t, _book(symbol, state[symbol][3], price, rng))
    return records, truth, truth[-1].t_ms


def _agg_id(record: tuple, symbol: str) -> int | None:
    kind, _, _, payload, _ = record
    if kind != "ws" or not payload.startswith(b'{"stream":"' + symbol.lower().encode() + b"@agg"):
        return None
    try:
        return orjson.loads(payload)["data"]["a"]
    except orjson.JSONDecodeError:
        return None  # the malformed frame


def repair_records(records: list[tuple], truth: list[Trade]) -> list[tuple]:
    """After the reconnect, one REST aggTrades answer per symbol from the last id delivered
    before the outage (inclusive: a duplicate) up to the first one after it (a duplicate)."""
    out = []
    reconnect_at = next(
        i for i, r in enumerate(records) if r[4] and r[4].get("event") == "reconnect"
    )
    # the repair goes out ~40 frames after the reconnect, when the gap has been noticed
    insert_at = reconnect_at + 40
    recv_ns = records[insert_at - 1][2] + 250_000_000
    for symbol in sorted(SYMBOLS):
        before = [a for r in records[:reconnect_at] if (a := _agg_id(r, symbol)) is not None]
        after = [a for r in records[reconnect_at:] if (a := _agg_id(r, symbol)) is not None]
        first_after = min(a for a in after if a > before[-1])
        rows = [
            tr.row() for tr in truth if tr.symbol == symbol and before[-1] <= tr.a <= first_after
        ]
        params = {"symbol": symbol, "fromId": before[-1], "limit": 1000}
        meta = {"path": "/api/v3/aggTrades", "params": params, "symbol": symbol, "status": 200}
        recv_ns += 80_000_000
        out.append(("rest", 0, recv_ns, orjson.dumps(rows), meta))
    merged = records[:insert_at] + out
    # receive times stay ordered: frames after the repair come after its answers
    for kind, conn, ns, payload, meta in records[insert_at:]:
        merged.append((kind, conn, max(ns, recv_ns + 1_000), payload, meta))
        recv_ns = max(ns, recv_ns + 1_000)
    return merged


def truth_table(truth: list[Trade]) -> pa.Table:
    return pa.table(
        [
            pa.array([t.symbol for t in truth], pa.string()),
            pa.array([t.a for t in truth], pa.int64()),
            pa.array([t.f for t in truth], pa.int64()),
            pa.array([t.l for t in truth], pa.int64()),
            decimal_from_scaled([t.price_cents for t in truth], 2),
            decimal_from_scaled([t.qty_e8 for t in truth], 8),
            pa.array([t.t_ms for t in truth], pa.int64()).cast(TS),
            pa.array([t.m for t in truth], pa.bool_()),
        ],
        schema=TRADES_SCHEMA,
    )


def expected_bars(truth: list[Trade], stop_ms: int) -> pa.Table:
    bars = aggregate_trades(truth_table(truth))
    ended = pc.less_equal(
        pc.add(pc.cast(bars["ts"], pa.int64()), pa.scalar(60_000, pa.int64())), stop_ms
    )
    return bars.filter(ended)


def generate(out_dir: Path) -> Path:
    """Write the session under ``out_dir``; -> its directory."""
    records, truth, stop = simulate()
    records = repair_records(records, truth)
    session = out_dir / SESSION_ID
    if session.exists():
        shutil.rmtree(session)
    writer = SessionWriter(
        out_dir,
        SESSION_ID,
        "binance",
        URL.split("streams=")[1].split("/"),
        sorted(SYMBOLS),
        "golden",
        start_ns=records[0][2],
        **WRITER,
    )
    for record in records:
        writer.append(*record)
    writer.close(stop)
    return session


def main() -> None:
    session = generate(HERE)
    _, truth, stop = simulate()
    expected = expected_bars(truth, stop)
    result = replay(session)
    diff = compare_bars(expected, result.bars)
    if diff:
        raise SystemExit(f"replay does not reproduce the ground truth: {diff}")
    pq.write_table(expected, HERE / "expected_bars.parquet")
    (HERE / "expected_summary.json").write_text(
        json.dumps(result.summary, indent=2, sort_keys=True) + "\n"
    )
    print(f"{session}: {result.summary}")


if __name__ == "__main__":
    main()
