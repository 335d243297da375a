"""Captures with depth for several symbols (issue 16): every REST depth answer a capture kept is
attributed to its symbol, so each book syncs and replays to the exchange's book. cryptofeed keeps
REST answers in its HTTP log (``<url> -> <epoch>: <body>``; the URL names the symbol);
hftbacktest's collector writes one file per symbol, so a bare ``{"lastUpdateId": ...}`` line
belongs to the depth symbol of its file. A bare answer in a file of several depth symbols names
none: it is kept in the log and counted, never applied to a book it may not belong to."""

from __future__ import annotations

from pathlib import Path

import orjson

from quant_cli.replay import import_captures
from quant_core.replay import replay
from quant_core.sessionlog.format import RecordKind
from quant_core.sessionlog.reader import SessionReader
from quant_dev.binance_sim.depth import DepthMarket

T0 = 1_700_000_000_000
DEPTH = 20
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def top(m: DepthMarket) -> tuple:
    bids = sorted(m.bids.items(), reverse=True)[:DEPTH]
    asks = sorted(m.asks.items())[:DEPTH]
    return ([p for p, _ in bids], [q for _, q in bids], [p for p, _ in asks], [q for _, q in asks])


class Capture:
    """Two depth markets stepping in turn; ``events`` are (ms, kind, symbol, payload) with
    kind "ws" (a diff frame) or "rest" (the ``/api/v3/depth`` answer at that moment); ``truth``
    the top of each book after every update id."""

    def __init__(self) -> None:
        self.markets = {s: DepthMarket(s, seed=11 + i, levels=80, changes=5) for i, s in
                        enumerate(SYMBOLS)}  # fmt: skip
        self.events: list[tuple[int, str, str, bytes]] = []
        self.truth: dict[tuple[str, int], tuple] = {}
        self.ms = T0

    def diffs(self, n: int) -> None:
        for _ in range(n):
            for symbol, m in self.markets.items():
                self.ms += 10
                frame = m.frame(m.step(self.ms))
                self.truth[(symbol, m.update_id)] = top(m)
                self.events.append((self.ms, "ws", symbol, frame))

    def answer(self, symbol: str) -> None:
        self.ms += 10
        self.events.append((self.ms, "rest", symbol, self.markets[symbol].snapshot(5000)))

    def run(self) -> None:
        self.diffs(2)
        self.answer("ETHUSDT")
        self.answer("BTCUSDT")
        self.diffs(150)  # 3 s of exchange time: interval snapshots too


def check_books(session: Path, capture: Capture) -> dict:
    result = replay(session)
    table = result.book_snapshots
    assert {row["symbol"] for row in table.to_pylist()} == set(SYMBOLS)
    for row in table.to_pylist():
        got = tuple(
            [int(v * 10**8) for v in row[c]]
            for c in ("bid_prices", "bid_qtys", "ask_prices", "ask_qtys")
        )
        assert got == capture.truth[(row["symbol"], row["update_id"])], row["symbol"]
    assert replay(session).book_snapshots.equals(table)
    return result.summary


def test_cryptofeed_http_log_answers_go_to_the_symbol_of_their_url(tmp_path: Path) -> None:
    c = Capture()
    c.run()
    ws = [f"{ms / 1000:.3f}: ".encode() + p for ms, kind, _, p in c.events if kind == "ws"]
    # A bare answer in the multi-symbol stream file: no symbol to give it, so it is not used.
    ws.insert(3, f"{(T0 + 25) / 1000:.3f}: ".encode() + c.markets["BTCUSDT"].snapshot(5000))
    streams = "/".join(f"{s.lower()}@depth@100ms" for s in SYMBOLS)
    header = f"wss://stream.binance.com:9443/stream?streams={streams} <-> {T0 / 1000:.3f}"
    (tmp_path / "BINANCE.ws.1.0").write_bytes(header.encode() + b"\n" + b"\n".join(ws) + b"\n")
    http = [b"https://api.binance.com/api/v3/exchangeInfo -> " + f"{T0 / 1000:.3f}".encode()
            + b': {"timezone":"UTC"}']  # fmt: skip
    for ms, kind, symbol, body in c.events:
        if kind == "rest":
            url = f"https://api.binance.com/api/v3/depth?symbol={symbol}&limit=5000"
            http.append(f"{url} -> {ms / 1000:.3f}: ".encode() + body)
    (tmp_path / "BINANCE.0").write_bytes(b"\n".join(http) + b"\n")

    closed = import_captures(
        "cryptofeed", [tmp_path / "BINANCE.ws.1.0", tmp_path / "BINANCE.0"], tmp_path / "s"
    )
    summary = check_books(closed.session_dir, c)
    assert summary["books"]["faults"] == {} and summary["books"]["rejects"] == {}
    assert summary["events"]["rest_other"] == 1  # the unattributed bare answer, counted
    assert summary["books"]["snapshots"] >= 2 * 4


def test_hftbacktest_answers_go_to_the_depth_symbol_of_their_file(tmp_path: Path) -> None:
    c = Capture()
    c.run()
    files = []
    for symbol in SYMBOLS:
        lines = [
            f"{ms * 1_000_000} ".encode() + payload for ms, _, s, payload in c.events if s == symbol
        ]
        path = tmp_path / f"{symbol.lower()}.txt"
        path.write_bytes(b"\n".join(lines) + b"\n")
        files.append(path)
    closed = import_captures("hftbacktest", files, tmp_path / "s")
    summary = check_books(closed.session_dir, c)
    assert summary["books"]["faults"] == {} and summary["books"]["rejects"] == {}
    assert summary["events"]["rest_other"] == 0
    # Each bare answer line became a rest record of its file's symbol.
    answered = [
        orjson.loads(meta)["symbol"]
        for kind, meta, _ in SessionReader(closed.session_dir).batches()
        if kind == RecordKind.REST
    ]
    assert sorted(answered) == sorted(SYMBOLS)
