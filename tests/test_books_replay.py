"""Books from captures: a cryptofeed capture with depth diffs, REST depth answers and every kind
of bad input imports (``quant replay import``) and replays to book snapshots that equal the
exchange's own book at their update ids; bad input is rejected, counted and resynced, never in
a snapshot. The NATS message of a snapshot is the ``BookSnapshot`` contract's JSON."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from quant_cli.replay import import_captures
from quant_core.contracts import BookSnapshot as BookSnapshotContract
from quant_core.depth_sync import BookSnapshot
from quant_core.replay import replay
from quant_dev.binance_sim.depth import DepthMarket
from quant_resources.live.sinks import snapshot_json

T0 = 1_700_000_000_000
DEPTH = 20
SAMPLES = (
    Path(
        os.environ.get("QUANT_SAMPLES", Path(__file__).resolve().parents[2] / "shared" / "samples")
    )
    / "binance_ws_cryptofeed"
)


def top(m: DepthMarket) -> tuple:
    bids = sorted(m.bids.items(), reverse=True)[:DEPTH]
    asks = sorted(m.asks.items())[:DEPTH]
    return ([p for p, _ in bids], [q for _, q in bids], [p for p, _ in asks], [q for _, q in asks])


def spoil(frame: bytes, qty: str) -> bytes:
    """The same diff with its first level's quantity replaced."""
    doc = orjson.loads(frame)
    side = "b" if doc["data"]["b"] else "a"
    doc["data"][side][0][1] = qty
    return orjson.dumps(doc)


def unsorted(body: bytes) -> bytes:
    doc = orjson.loads(body)
    doc["bids"][1], doc["bids"][2] = doc["bids"][2], doc["bids"][1]
    return orjson.dumps(doc)


def repeated(body: bytes) -> bytes:
    doc = orjson.loads(body)
    doc["asks"].insert(1, doc["asks"][0])
    return orjson.dumps(doc)


def capture(tmp_path: Path) -> tuple[Path, dict[int, tuple]]:
    """A cryptofeed raw log of ``btcusdt@depth@100ms`` with REST answers between the frames,
    and the exchange's top of book after every update id (the ground truth)."""
    m = DepthMarket("BTCUSDT", seed=7, levels=200, changes=8)
    truth: dict[int, tuple] = {}
    lines: list[bytes] = []
    clock = [0]

    def line(payload: bytes) -> None:
        clock[0] += 1
        lines.append(f"{(T0 + 37 * clock[0]) / 1000:.3f}: ".encode() + payload)

    def diff(change=None) -> None:
        frame = m.frame(m.step(T0 + 100 * len(truth)))
        truth[m.update_id] = top(m)
        line(frame if change is None else change(frame))

    def run(n: int) -> None:
        for _ in range(n):
            diff()

    run(2)
    line(m.snapshot(5000))  # covers both buffered diffs: they are dropped
    run(30)
    diff(lambda f: spoil(f, "-1.00000000"))  # negative quantity: rejected, a hole, a gap
    run(2)
    line(unsorted(m.snapshot(5000)))  # refused, asked again
    run(1)
    line(repeated(m.snapshot(5000)))  # refused, asked again
    run(1)
    line(m.snapshot(5000))
    run(25)
    diff(lambda f: spoil(f, "NaN"))
    run(1)
    line(b'{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":')  # malformed
    eth = DepthMarket("ETHUSDT", seed=7, levels=20, changes=3)
    line(eth.frame(eth.step(T0)))  # a symbol the capture did not subscribe to
    run(2)
    line(m.snapshot(5000))
    run(25)
    path = tmp_path / "BINANCE.ws.1.0"
    header = b"wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms <-> "
    path.write_bytes(header + f"{T0 / 1000:.3f}".encode() + b"\n" + b"\n".join(lines) + b"\n")
    return path, truth


def test_capture_with_depth_and_bad_input_replays_to_the_exchange_book(tmp_path) -> None:
    path, truth = capture(tmp_path)
    closed = import_captures("cryptofeed", [path], tmp_path / "sessions")
    result = replay(closed.session_dir)
    books = result.summary["books"]
    assert books["rejects"] == {"bad_number": 2, "malformed_json": 1, "unsubscribed_symbol": 1}
    assert books["snapshot_rejects"] == {"bad_field": 2}
    assert books["faults"] == {"gap": 2, "bad_snapshot": 2}
    table = result.book_snapshots
    assert table.num_rows == books["snapshots"] > 6
    synced = set()
    for row in table.to_pylist():
        got = tuple(
            [int(v * 10**8) for v in row[c]]
            for c in ("bid_prices", "bid_qtys", "ask_prices", "ask_qtys")
        )
        assert got == truth[row["update_id"]], f"snapshot at {row['update_id']} is not the book"
        synced.add(row["synced_from"])
    assert len(synced) == 3  # the first sync and the two resyncs, each from a sound answer
    # The same session replays to the same snapshots.
    assert replay(closed.session_dir).book_snapshots.equals(table)


def test_snapshot_message_is_the_contract_json() -> None:
    snap = BookSnapshot(
        "BTCUSDT", T0, 105, 99, (5_612_344_000_000,), (120_000_000,), (5_612_345_000_000,),
        (40_000_000,), True, False, 0,
    )  # fmt: skip
    msg = BookSnapshotContract.model_validate_json(snapshot_json(snap))
    assert str(msg.bids[0].price) == "56123.44" and str(msg.asks[0].qty) == "0.4"
    assert (msg.update_id, msg.synced_from, msg.asks_complete) == (105, 99, False)
    assert msg.ts_event.isoformat() == "2023-11-14T22:13:20+00:00"


@pytest.mark.samples
@pytest.mark.skipif(not (SAMPLES / "BINANCE.ws.1.0").is_file(), reason="samples absent")
def test_real_capture_depth_imports_and_replays(tmp_path) -> None:
    """The real capture's depth frames import and replay without a reject. It recorded no REST
    answer, so no book ever syncs: nothing is stored as a snapshot, which is the truth."""
    closed = import_captures("cryptofeed", [SAMPLES / "BINANCE.ws.1.0"], tmp_path / "s")
    books = replay(closed.session_dir).summary["books"]
    assert books["rejects"] == {} and books["snapshots"] == 0
