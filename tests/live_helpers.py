"""Real processes for the live-ingestion tests: ``quant sim binance``, ``quant live``, a fresh
database on the ClickHouse endpoint, and the checks that compare what was stored with what the
simulator says happened (its REST ``aggTrades`` and its own ``klines``)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from click.testing import Result

from quant_dev.processes import Child, quant, tail
from quant_resources.migrations import ClickHouseLedger, load, migrate
from quant_resources.warehouse import WarehouseResource

MINUTE_MS = 60_000
QUANT = [sys.executable, "-m", "quant_cli.main"]
# What `quant live` imports before it connects (most of its start-up time).
LIVE_IMPORTS = (
    "quant_cli.main",
    "quant_resources.lake_client",  # klive: the plain lake and warehouse (no Dagster)
    "quant_resources.live.outage",
    "quant_resources.live.pipeline",
    "quant_resources.warehouse_client",
)


# Every process started here, so a fixture can stop them all whatever failed half-way.
STARTED: list[Child] = []


def stop_all() -> None:
    while STARTED:
        STARTED.pop().stop(15)


# -- the simulator ---------------------------------------------------------------------------


@dataclass
class Sim:
    port: int
    child: Child
    stderr: Path
    offset_ms: int = 0  # its exchange clock minus the wall clock (``--minute-in``)

    def now(self) -> float:
        """The simulator's exchange time now, in seconds since the epoch."""
        return time.time() + self.offset_ms / 1000

    @property
    def proc(self) -> subprocess.Popen:
        return self.child.process

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def request(self, path: str, body: Any = None) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(
                "GET" if body is None else "POST",
                path,
                None if body is None else orjson.dumps(body),
            )
            resp = conn.getresponse()
            data = orjson.loads(resp.read())
        finally:
            conn.close()
        if resp.status != 200:
            raise AssertionError(f"simulator {path} -> HTTP {resp.status}: {data}")
        return data

    def stats(self) -> dict:
        return self.request("/_sim/stats")

    def pause(self) -> None:
        self.request("/_sim/market", {"paused": True})

    def agg_trades(self, symbol: str, first: int, last: int) -> list[dict]:
        rows: list[dict] = []
        while not rows or rows[-1]["a"] < last:
            start = rows[-1]["a"] + 1 if rows else first
            page = self.request(f"/api/v3/aggTrades?symbol={symbol}&fromId={start}&limit=1000")
            if not page:
                break
            rows += page
        return [r for r in rows if r["a"] <= last]

    def kline(self, symbol: str, open_ms: int) -> list | None:
        rows = self.request(
            f"/api/v3/klines?symbol={symbol}&interval=1m&startTime={open_ms}"
            f"&endTime={open_ms}&limit=1"
        )
        return rows[0] if rows and rows[0][0] == open_ms else None

    def stop(self) -> None:
        self.child.stop(10)


def start_sim(workdir: Path, *args: str, minute_in: float | None = None) -> Sim:
    """``quant sim binance``; with ``minute_in`` its exchange clock is set back so that a
    minute boundary falls that many seconds after it is up (a test that needs a whole minute
    then waits for that one, not for the wall clock's next)."""
    if minute_in is not None:
        args = (*args, "--minute-in", str(minute_in))
    stderr = workdir / "sim.stderr"
    child = Child(
        "quant sim binance",
        quant("sim", "binance", "--port", "0", *args),
        r"^listening on ws://127\.0\.0\.1:(\d+) \(rest http://[^)]+\)$",
        stderr_log=stderr,
    )
    STARTED.append(child)
    sim = Sim(int(child.match[1]), child, stderr)
    if minute_in is not None:
        before = time.time()
        server_ms = sim.request("/api/v3/time")["serverTime"]
        # The middle of the request: a few ms of error, nothing a minute boundary minds.
        sim.offset_ms = server_ms - int((before + time.time()) * 500)
    return sim


# -- the warehouse ---------------------------------------------------------------------------


def fresh_warehouse(clickhouse_url: str) -> WarehouseResource:
    """A new database on the test services' ClickHouse endpoint, migrated to the latest."""
    database = f"live_{uuid.uuid4().hex[:12]}"
    url = urlunsplit(urlsplit(clickhouse_url)._replace(path=f"/{database}"))
    warehouse = WarehouseResource(url=url)
    migrations = load("clickhouse")
    migrate(ClickHouseLedger(warehouse), migrations, migrations[-1].key)
    return warehouse


def drop(warehouse: WarehouseResource) -> None:
    warehouse.command(f"DROP DATABASE IF EXISTS {warehouse.database}")


# -- quant live ------------------------------------------------------------------------------


@dataclass
class Live:
    """One ``quant live --json`` subprocess; output goes to files so a failure can show it."""

    child: Child
    stdout: Path
    stderr: Path
    started: float = field(default_factory=time.time)

    @property
    def proc(self) -> subprocess.Popen:
        return self.child.process

    def wait(self, timeout: float) -> int:
        try:
            return self.child.wait(timeout)
        except subprocess.TimeoutExpired:
            self.child.kill()
            raise AssertionError(
                f"quant live did not exit within {timeout:.0f} s\n{self.explain()}"
            ) from None

    def signal(self, sig: int) -> None:
        self.child.signal(sig)

    def explain(self) -> str:
        return (
            f"exit code {self.proc.returncode}\n--- stderr tail ---\n{tail(self.stderr)}\n"
            f"--- stdout tail ---\n{tail(self.stdout, 10)}"
        )

    def summary(self, timeout: float) -> dict:
        """Wait for a clean exit and return the ``--json`` summary."""
        rc = self.wait(timeout)
        if rc != 0:
            raise AssertionError(f"quant live failed\n{self.explain()}")
        lines = [ln for ln in self.stdout.read_text().splitlines() if ln.startswith("{")]
        if not lines:
            raise AssertionError(f"quant live printed no JSON summary\n{self.explain()}")
        return json.loads(lines[-1])

    def kill(self) -> None:
        self.child.kill()

    def release(self) -> None:
        """Start a ``quant live`` prepared with ``start_live(..., preloaded=True)``."""
        self.child.release()
        self.started = time.time()


def live_env(sim: Sim, warehouse: WarehouseResource, home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NATS_URL", None)
    env.pop("REDIS_URL", None)  # a test that wants the latest-values cache passes its own
    env.update(
        BINANCE_WS_URL=f"ws://{sim.url}",
        BINANCE_REST_URL=f"http://{sim.url}",
        CLICKHOUSE_URL=warehouse.resolved_url,
        QUANT_HOME=str(home),
        **extra,
    )
    return env


def start_live(
    workdir: Path,
    name: str,
    env: dict[str, str],
    symbols: str,
    duration: float | None = None,
    streams: str = "aggTrade,bookTicker",
    preloaded: bool = False,
) -> Live:
    """``quant live``; with ``preloaded`` it only imports its modules and waits for
    ``Live.release()`` (a test that starts many in a row imports the next during this one)."""
    args = quant("live", "--symbols", symbols, "--streams", streams, "--json")
    if duration is not None:
        args += ["--duration", f"{duration:.1f}"]
    stdout, stderr = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    child = Child(
        "quant live",
        args,
        None,
        environ=env,
        log=stdout,
        stderr_log=stderr,
        preload=LIVE_IMPORTS if preloaded else None,
    )
    STARTED.append(child)
    return Live(child, stdout, stderr)


def quant_here(env: dict[str, str] | None, *args: str) -> Result:
    """``quant ARGS`` through the CLI's own Typer app (its option parsing, output and exit
    code), in this process: a subprocess would add an interpreter start and the imports of
    replay, pyarrow and the warehouse client (seconds each time on a loaded machine), which
    the tests that call this are not about. ``env`` is set for the call only."""
    from typer.testing import CliRunner

    from quant_cli.main import app

    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


def verify_against_warehouse(
    session: Path | str, warehouse: WarehouseResource, env: dict[str, str], *extra: str
) -> Result:
    """``quant replay verify SESSION --against-warehouse`` (in this process, see
    :func:`quant_here`); asserts exit 0."""
    env = {**env, "CLICKHOUSE_URL": warehouse.resolved_url}
    verify = quant_here(env, "replay", "verify", str(session), "--against-warehouse", *extra)
    assert verify.exit_code == 0, verify.output[-5000:]
    return verify


def seconds_to_minute_end(now: float | None = None, offset_s: float = 0.0) -> float:
    """Seconds from now until ``offset_s`` past the next minute boundary."""
    now = time.time() if now is None else now
    return (60 - now % 60) + offset_s


# -- checks ----------------------------------------------------------------------------------


@dataclass
class TradeCheck:
    symbol: str
    first_id: int
    last_id: int
    first_ms: int
    last_ms: int
    count: int


def check_trades(warehouse: WarehouseResource, sim: Sim, symbol: str) -> TradeCheck:
    """Stored aggTrades of ``symbol``: contiguous ids, no duplicates (logical or physical), and
    exactly the simulator's REST answer for that id range."""
    final = warehouse.query_rows(
        "SELECT count(), uniqExact(trade_id), min(trade_id), max(trade_id) FROM trades FINAL "
        "WHERE source = 'binance' AND symbol = {s:String} AND stream = 'aggTrade'",
        {"s": symbol},
    )[0]
    count, unique, lo, hi = final
    assert count > 0, f"{symbol}: no trades stored"
    assert count == unique == hi - lo + 1, (
        f"{symbol}: {count} trades, {unique} distinct ids, ids {lo}..{hi} "
        f"({hi - lo + 1 - unique} missing)"
    )
    raw = warehouse.scalar(
        "SELECT count() FROM trades WHERE source = 'binance' AND symbol = {s:String} "
        "AND stream = 'aggTrade'",
        {"s": symbol},
    )
    assert raw == count, f"{symbol}: {raw - count} physical duplicate rows (FINAL hides them)"
    stored = warehouse.query_rows(
        "SELECT trade_id, toString(price), toString(qty), first_trade_id, last_trade_id, "
        "toUnixTimestamp64Milli(ts), is_buyer_maker FROM trades FINAL "
        "WHERE source = 'binance' AND symbol = {s:String} AND stream = 'aggTrade' "
        "ORDER BY trade_id",
        {"s": symbol},
    )
    exchange = sim.agg_trades(symbol, lo, hi)
    assert len(exchange) == len(stored), f"{symbol}: simulator has {len(exchange)} for {lo}..{hi}"
    for row, ref in zip(stored, exchange, strict=True):
        mine = (row[0], Decimal(row[1]), Decimal(row[2]), row[3], row[4], row[5], bool(row[6]))
        theirs = (
            ref["a"],
            Decimal(ref["p"]),
            Decimal(ref["q"]),
            ref["f"],
            ref["l"],
            ref["T"],
            ref["m"],
        )
        assert mine == theirs, f"{symbol}: stored {mine} but the exchange has {theirs}"
    return TradeCheck(symbol, lo, hi, stored[0][5], stored[-1][5], count)


BAR_COLUMNS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
)
# Kline fields in the same order: o, h, l, c, v, q (quote volume), n, V, Q.
KLINE_INDEX = (1, 2, 3, 4, 5, 7, 8, 9, 10)


def stored_bars(warehouse: WarehouseResource, symbol: str) -> dict[int, tuple]:
    rows = warehouse.query_rows(
        f"SELECT toUnixTimestamp64Milli(ts), {', '.join(f'toString({c})' for c in BAR_COLUMNS)} "
        "FROM bars_1m FINAL WHERE source = 'binance' AND symbol = {s:String} ORDER BY ts",
        {"s": symbol},
    )
    return {r[0]: tuple(Decimal(v) for v in r[1:]) for r in rows}


def full_minutes(first_ms: int, last_ms: int) -> list[int]:
    """Minutes whose every trade lies strictly inside (first_ms, last_ms]: with contiguous ids
    and exchange times that never go backwards, all of their trades are between the two."""
    start = first_ms // MINUTE_MS * MINUTE_MS + MINUTE_MS
    return list(range(start, last_ms - MINUTE_MS + 1, MINUTE_MS))


def check_bars(
    warehouse: WarehouseResource, sim: Sim, trades: TradeCheck, until_ms: int | None = None
) -> list[int]:
    """Every minute fully covered by the stored trades (and ended by ``until_ms``) has a bar,
    and it equals the simulator's own kline; returns those minutes."""
    last = trades.last_ms if until_ms is None else min(trades.last_ms, until_ms)
    minutes = full_minutes(trades.first_ms, last)
    bars = stored_bars(warehouse, trades.symbol)
    for minute in minutes:
        assert minute in bars, f"{trades.symbol}: no bar stored for the full minute {minute}"
        kline = sim.kline(trades.symbol, minute)
        assert kline is not None, f"{trades.symbol}: the simulator has no kline at {minute}"
        expected = tuple(Decimal(str(kline[i])) for i in KLINE_INDEX)
        got = bars[minute]
        assert got == expected, (
            f"{trades.symbol} bar {minute}: stored "
            f"{dict(zip(BAR_COLUMNS, got, strict=True))} but the exchange's kline is "
            f"{dict(zip(BAR_COLUMNS, expected, strict=True))}"
        )
    return minutes


def check_bars_equal_trades(
    warehouse: WarehouseResource, symbols: list[str] | tuple[str, ...], until_ms: int
) -> list[tuple[str, int]]:
    """Every minute of ``symbols`` that ended by ``until_ms`` (the stop's exchange time) has
    the bar of its stored trades, exactly (``quant_core.bars.aggregate_trades`` over trades
    FINAL), and no other bar is stored; returns the (symbol, minute) pairs checked."""
    from quant_resources.live.bar_audit import bar_differences

    since = warehouse.scalar(
        "SELECT toUnixTimestamp64Milli(min(ts)) FROM trades FINAL WHERE source = 'binance' "
        "AND symbol IN {s:Array(String)} AND stream = 'aggTrade'",
        {"s": list(symbols)},
    )
    assert since, f"no trades stored for {symbols}"
    diffs = bar_differences(warehouse, list(symbols), int(since), until_ms)
    assert not diffs, (
        f"{len(diffs)} minute(s) where the stored bar is not the bar of the stored trades; "
        f"first: {diffs[0]}"
    )
    minutes = warehouse.query_rows(
        "SELECT symbol, toUnixTimestamp64Milli(ts) FROM bars_1m FINAL WHERE source = 'binance' "
        "AND symbol IN {s:Array(String)} AND ts >= fromUnixTimestamp64Milli({lo:Int64}) "
        "AND ts < fromUnixTimestamp64Milli({hi:Int64}) ORDER BY symbol, ts",
        {
            "s": list(symbols),
            "lo": int(since) // MINUTE_MS * MINUTE_MS,
            "hi": until_ms // MINUTE_MS * MINUTE_MS,
        },
    )
    return [(r[0], int(r[1])) for r in minutes]


def stop_when_recorded_is_stored(
    live: Live,
    sim: Sim,
    warehouse: WarehouseResource,
    symbols: list[str] | tuple[str, ...],
    timeout: float = 90.0,
    minute_ended: bool = False,
) -> dict:
    """Stop ``quant live`` (SIGTERM: the clean stop) once a recorded simulator (``--source``)
    has published everything and the warehouse holds every trade id its REST history has
    (the stream's and the repaired ones; less any the ``lose`` fault took); with
    ``minute_ended`` also once the exchange clock (running on while idle) has ended the minute
    of the last trade. Waiting for that state replaces a ``--duration`` long enough for the
    slowest machine. -> the ``--json`` summary."""
    deadline = time.monotonic() + timeout

    def complete() -> bool:
        stats = sim.stats()
        if not stats["exhausted"]:
            return False
        last_ms = 0
        for symbol in symbols:
            lo, hi = stats["first_agg_id"][symbol], stats["last_agg_id"][symbol]
            lost = len(stats["lost_agg_ids"].get(symbol, ()))
            stored, newest = warehouse.query_rows(
                "SELECT uniqExact(trade_id), toUnixTimestamp64Milli(max(ts)) FROM trades "
                "WHERE source = 'binance' AND symbol = {s:String} AND stream = 'aggTrade' "
                "AND trade_id BETWEEN {lo:UInt64} AND {hi:UInt64}",
                {"s": symbol, "lo": lo, "hi": hi},
            )[0]
            if stored < hi - lo + 1 - lost:
                return False
            last_ms = max(last_ms, int(newest))
        minute_end = last_ms // MINUTE_MS * MINUTE_MS + MINUTE_MS
        return not minute_ended or stats["exchange_ms"] >= minute_end

    while not complete():
        if live.proc.poll() is not None:
            raise AssertionError(
                f"quant live exited before the capture was stored\n{live.explain()}"
            )
        if time.monotonic() > deadline:
            live.kill()
            raise AssertionError(f"the capture was not stored in {timeout:.0f} s\n{live.explain()}")
        time.sleep(0.2)
    live.signal(signal.SIGTERM)
    return live.summary(60)


def unconnected_pipeline(session_root: Path, session_id: str, **config: Any):
    """A ``LivePipeline`` for one aggTrade stream pointed at a free port nobody serves (tests
    drive its processing directly), with no warehouse."""
    import socket

    from quant_resources.live.pipeline import LiveConfig, LivePipeline

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return LivePipeline(
        LiveConfig(
            symbols=["BTCUSDT"],
            streams=["aggTrade"],
            ws_url=f"ws://127.0.0.1:{port}",
            rest_url=f"http://127.0.0.1:{port}",
            session_root=session_root,
            session_id=session_id,
            **config,
        ),
        warehouse=None,
    )
