"""The live ingestion pipeline (asyncio, one process).

    socket readers --(bounded queue, drop+count when full)--> processor --> sinks
                                                                  ^
                               REST gap repair (rate-limited) ---'

The processor is the only writer of state. For every item it first appends the raw bytes to the
session log, then decodes, de-duplicates by trade id, opens gaps, aggregates and stages rows in
the sinks. REST answers travel through the same queue, so the log holds them in the order they
were applied and a replay reproduces the live result exactly.

Write-ahead rule: no row reaches a sink (ClickHouse, NATS, any other) before the records it came
from are durable in the session log. One gate enforces it for every sink (``_release``): it
fsyncs the log (``SessionWriter.sync``, one fsync covering everything appended so far) and then,
with no await in between, releases what the sinks staged; sinks send released rows only. Staged
rows were all produced from records appended before that fsync, so a crash at any moment leaves
nothing in ClickHouse or NATS whose frames the log lacks. The gate runs when a sink flushes (the
ticker every 0.2 s, a full buffer, NATS when the queue runs dry), so it costs one fsync per sink
flush, not one per frame; in a quiet period the ticker still fsyncs records waiting for longer
than the writer's ``fsync_every_seconds``.

Bars are final once the exchange-time watermark has passed them by the lateness; while a gap
is open the aggregator is held at the time of the last trade before the gap, so a bar is never
final before its missing trades are repaired. A quiet market's minutes close on the exchange's
own clock (``/api/v3/time``, read once a second), never the local wall clock; each heartbeat is
recorded in the session log so replay applies it at the same place (``quant_core.
exchange_clock``). A trade for a minute already written writes a new version of its bar. On a
clean stop every bar whose minute has ended by the exchange's time at the stop is written
(after a REST catch-up to that time), never the still-open minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from quant_core import __version__
from quant_core.bars import BarRecord, StreamingBarAggregator
from quant_core.decode_batch import (
    AGG,
    STREAM_NAMES,
    TRADE,
    BatchDecoder,
    BookColumns,
    TradeColumns,
    observe_trades,
)
from quant_core.exchange_clock import ExchangeClock, clock_meta
from quant_core.gaps import Gap, GapTracker
from quant_core.normalize import BookTickerEvent, ControlEvent, Normalizer, TradeEvent
from quant_core.rest_decode import AGG_TRADES_PATH, HISTORICAL_TRADES_PATH, decode_rest
from quant_core.telemetry import TelemetryClock
from quant_resources.binance.rest import BinanceRest
from quant_resources.binance.stream import BinanceStreamClient, RawFrame
from quant_resources.binance.urls import stream_names
from quant_resources.live.sinks import (
    NatsSink,
    WarehouseSink,
    quote_columns_table,
    trade_columns_table,
)
from quant_resources.session_lock import LOCK_FILE
from quant_resources.session_writer import SessionWriter

log = logging.getLogger(__name__)
REPAIR_PAGE = 1000
CLOCK_EVERY_S = 1.0  # seconds between readings of the exchange's clock
DRAIN_MAX = 4096  # frames taken from the queue per burst
# NATS is flushed as the queue runs dry, each time behind an fsync of the log: at most this
# often, so a trickle of frames costs a bounded number of fsyncs per second.
NATS_GATE_S = 0.05


@dataclass
class LiveConfig:
    symbols: list[str]
    streams: list[str]
    ws_url: str
    rest_url: str
    session_root: Path
    duration_s: float | None = None
    lateness_ms: int = 2000
    queue_size: int = 100_000
    flush_rows: int = 5000
    flush_seconds: float = 1.0
    nats_url: str | None = None
    silence_s: float = 30.0
    stop_budget_s: float = 60.0  # REST catch-up time allowed on a clean stop
    drain_timeout_s: float = 120.0  # hook (#15): an outage watch that gave up shortens it
    session_id: str = field(
        default_factory=lambda: (
            f"live-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"
        )
    )

    @property
    def bar_stream(self) -> str:
        return "aggTrade" if "aggTrade" in self.streams else "trade"


@dataclass
class _RestItem:
    symbol: str
    stream: str
    path: str
    params: dict
    body: bytes
    recv_ns: int
    applied: asyncio.Future | None = None


@dataclass
class LiveSummary:
    session_id: str
    session_dir: str
    frames: int = 0
    trades: int = 0
    quotes: int = 0
    bars: int = 0
    duplicates: int = 0
    gaps: int = 0
    trades_repaired: int = 0
    rest_requests: int = 0
    drops: int = 0
    reconnects: int = 0
    handovers: int = 0
    rejects: dict = field(default_factory=dict)
    stop_exchange_ms: int | None = None
    dropped_late: int = 0  # trades too late for their bar (beyond a day): never silent
    rows_written: dict = field(default_factory=dict)
    nats_published: int = 0
    nats_dropped: int = 0
    final_digest: str = ""
    seconds: float = 0.0


class LivePipeline:
    def __init__(self, config: LiveConfig, warehouse, lake=None) -> None:
        self.config = config
        self.warehouse = warehouse
        self.lake = lake
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=config.queue_size)
        self.normalizer = Normalizer(set(config.symbols))
        self.decoder = BatchDecoder(self.normalizer)
        self._bar_kind = AGG if config.bar_stream == "aggTrade" else TRADE
        self.aggregator = StreamingBarAggregator(lateness_ms=config.lateness_ms, source="binance")
        self.gaps = GapTracker()
        self.rest = BinanceRest(config.rest_url)
        self.client = BinanceStreamClient(
            config.ws_url,
            stream_names(config.symbols, config.streams),
            self.queue,
            silence_s=config.silence_s,
        )
        self.sink = WarehouseSink(
            warehouse, config.session_id, config.flush_rows, config.flush_seconds
        )
        self.nats = NatsSink(config.nats_url) if config.nats_url else None
        # Every sink, behind the write-ahead gate (``_release``).
        self.sinks: list = [self.sink, *([self.nats] if self.nats else [])]
        self._released_at = 0.0
        self.log: SessionWriter | None = None
        self.summary = LiveSummary(config.session_id, str(config.session_root / config.session_id))
        self.telemetry = TelemetryClock(int(time.time() * 1000))
        self.stop = asyncio.Event()
        self.clock = ExchangeClock()
        self._clock_task: asyncio.Task | None = None
        self._last_quote_id: dict[str, int] = {}
        self._repairs: dict[tuple[str, str], asyncio.Task] = {}
        self.status: Callable[[LiveSummary, LivePipeline], None] = lambda s, p: None
        self._started = time.monotonic()

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> LiveSummary:
        cfg = self.config
        cfg.session_root.mkdir(parents=True, exist_ok=True)
        self.log = SessionWriter(
            cfg.session_root,
            cfg.session_id,
            "binance",
            cfg.streams,
            cfg.symbols,
            f"quant {__version__}",
        )
        self.client.on_event = self._connection_event
        if self.nats:
            await self.nats.connect()
        await self._read_clock(time.monotonic() + 10)
        await self._resume()
        reader = asyncio.create_task(self.client.run(self.stop), name="binance-client")
        ticker = asyncio.create_task(self._tick(), name="live-ticker")
        try:
            await self._process()
        finally:
            self.stop.set()
            ticker.cancel()
            with contextlib.suppress(BaseException):
                await ticker
            if self._clock_task is not None:
                with contextlib.suppress(BaseException):
                    await self._clock_task
            with contextlib.suppress(BaseException):
                await reader
        await self._finish()
        return self.summary

    def request_stop(self) -> None:
        self.stop.set()

    async def _tick(self) -> None:
        """Every 0.2 s: duration, exchange-clock heartbeat, sink flush, telemetry, status."""
        read_at = time.monotonic() + CLOCK_EVERY_S
        while not self.stop.is_set():
            await asyncio.sleep(0.2)
            if (
                self.config.duration_s
                and time.monotonic() - self._started >= self.config.duration_s
            ):
                self.stop.set()
                return
            if time.monotonic() >= read_at and (
                self._clock_task is None or self._clock_task.done()
            ):
                read_at = time.monotonic() + CLOCK_EVERY_S
                self._clock_task = asyncio.create_task(self._read_clock(None), name="clock")
            # The exchange clock may close a quiet minute only while every connection is up
            # and settled (after a drop, missing trades are unknown until the next one arrives)
            # and nothing received waits in the queue.
            if self.clock.now_ms is not None and self.client.settled(5.0) and self.queue.empty():
                self._heartbeat(self.clock.now_ms)
            await self._flush_sinks()
            self._roll_telemetry()
            self.status(self.summary, self)

    # -- resume after restart ------------------------------------------------------------------
    async def _resume(self) -> None:
        """Continue after the last stored trade per symbol; bars not yet final when the previous
        process died are rebuilt from the trades it stored (recorded, so replays match)."""
        try:
            rows = await asyncio.to_thread(
                self.warehouse.query_rows,
                "SELECT symbol, stream, max(trade_id), max(ts) FROM trades "
                "WHERE source = 'binance' AND symbol IN {s:Array(String)} "
                "AND stream = {st:String} GROUP BY symbol, stream",
                {"s": self.config.symbols, "st": self.config.bar_stream},
            )
        except Exception as exc:  # a fresh warehouse has no history: start clean
            log.info("no stored trades to resume from (%s)", exc)
            rows = []
        fresh = [s for s in self.config.symbols if s not in {r[0] for r in rows}]
        await self._seed_fresh(fresh)
        for symbol, stream, last_id, last_ts in rows:
            last_ts_ms = int(last_ts.timestamp() * 1000)
            bars_done = await asyncio.to_thread(
                self.warehouse.scalar,
                "SELECT max(ts) FROM bars_1m WHERE source = 'binance' AND symbol = {s:String}",
                {"s": symbol},
            )
            start_ms = int(bars_done.timestamp() * 1000) + 60_000 if bars_done else 0
            table = await asyncio.to_thread(
                self.warehouse.query_rows,
                "SELECT trade_id, first_trade_id, last_trade_id, toString(price), toString(qty), "
                "toUnixTimestamp64Milli(ts), is_buyer_maker FROM trades FINAL "
                "WHERE source = 'binance' AND symbol = {s:String} AND stream = {st:String} "
                "AND ts >= fromUnixTimestamp64Milli({t:Int64}) ORDER BY trade_id",
                {"s": symbol, "st": stream, "t": start_ms},
            )
            path, body = _as_rest_answer(stream, table)
            if not table:
                self._seed(symbol, stream, int(last_id), last_ts_ms)
                continue
            # Continuity is checked from the last trade before the re-applied ones: trades are
            # stored in the order they were processed, so a gap repair still open when the
            # previous process died leaves a hole that may sit right before table[0] (or inside
            # the table, where the tracker below finds it); either way it is repaired from REST.
            before = await asyncio.to_thread(
                self.warehouse.query_rows,
                "SELECT trade_id, toUnixTimestamp64Milli(ts) FROM trades "
                "WHERE source = 'binance' AND symbol = {s:String} AND stream = {st:String} "
                "AND ts < fromUnixTimestamp64Milli({t:Int64}) ORDER BY trade_id DESC LIMIT 1",
                {"s": symbol, "st": stream, "t": start_ms},
            )
            if before:
                self._seed(symbol, stream, int(before[0][0]), int(before[0][1]))
            else:
                self._seed(symbol, stream, int(table[0][0]) - 1, int(table[0][5]))
            # Already stored: re-apply them to the aggregator (recorded in the session log so a
            # replay rebuilds the same bars) without writing them again.
            self._apply_rest(
                _RestItem(
                    symbol,
                    stream,
                    path,
                    {"origin": "warehouse", "from_ms": start_ms},
                    body,
                    time.time_ns(),
                ),
                store=False,
            )
            log.info("resumed %s %s after trade id %s", symbol, stream, last_id)

    def _seed(self, symbol: str, stream: str, last_id: int, last_ts_ms: int) -> None:
        """Ids up to ``last_id`` are accounted for; recorded so a replay seeds the same way."""
        self.gaps.seed(symbol, stream, last_id, last_ts_ms)
        meta = {
            "event": "seed",
            "symbol": symbol,
            "stream": stream,
            "last_id": last_id,
            "last_ts_ms": last_ts_ms,
        }
        self.log.append("conn", 0, time.time_ns(), b"", meta)

    async def _seed_fresh(self, symbols: list[str]) -> None:
        """A first start mid-minute: the trades of the running minute before the first live
        frame come from REST (the first live trade opens that gap), so the first bar is whole."""
        if self.config.bar_stream != "aggTrade":
            return
        now_ms = self.clock.estimate(time.time_ns() // 1_000_000)
        if now_ms is None:
            return  # the exchange's clock is unknown: no minute to complete
        minute_ms = now_ms // 60_000 * 60_000
        for symbol in symbols:
            try:
                answer = await asyncio.to_thread(
                    self.rest.get,
                    AGG_TRADES_PATH,
                    {"symbol": symbol, "startTime": minute_ms, "limit": 1},
                )
                rows = answer.json()
            except Exception as exc:  # REST unreachable: the first minute may start late
                log.warning("cannot find the first trade of the minute for %s: %s", symbol, exc)
                continue
            if rows:
                self._seed(symbol, "aggTrade", int(rows[0]["a"]) - 1, minute_ms - 1)

    # -- processing ------------------------------------------------------------------------------
    async def _process(self) -> None:
        queue = self.queue
        while True:
            if self.stop.is_set() and not self.rest.stopping.is_set():
                await self._stop_repairs()
            try:
                item = await asyncio.wait_for(queue.get(), 0.25)
            except TimeoutError:
                if self.stop.is_set() and queue.empty():
                    return
                continue
            # Take what else has arrived (bounded): frames are logged, decoded and aggregated
            # in bursts, at a fraction of the per-frame cost; REST pages keep their place.
            items = [item]
            while len(items) < DRAIN_MAX and not queue.empty():
                items.append(queue.get_nowait())
            frames: list[RawFrame] = []
            for item in items:
                if isinstance(item, RawFrame):
                    frames.append(item)
                    continue
                if frames:
                    self._on_frames(frames)
                    frames = []
                self._apply_rest(item, store=True)
            if frames:
                self._on_frames(frames)
            if self.sink.buffered() >= self.config.flush_rows:
                await self._flush_sinks()
            # NATS consumers want events promptly: publish when the queue runs dry (or the
            # buffer grows), which costs one await per burst rather than one per frame.
            nats = self.nats
            if (
                nats is not None
                and nats.buffered()
                and (queue.empty() or nats.buffered() >= 1000)
                and time.monotonic() - self._released_at >= NATS_GATE_S
            ):
                self._release()
                await nats.flush()

    def _on_frames(self, frames: list[RawFrame]) -> None:
        # Write-ahead: logged before anything is applied.
        self.log.append_many("ws", [(f.conn_id, f.recv_ns, f.data) for f in frames])
        n = len(frames)
        self.summary.frames += n
        minute = self.telemetry.current.counters
        minute["messages"] += n
        payloads = [f.data for f in frames]
        minute["bytes"] += sum(map(len, payloads))
        batch = self.decoder.decode(payloads)
        books = batch.books
        if self.nats is not None or (len(books) and bool((books.ts >= 0).any())):
            # NATS wants one message per event, and futures book tickers move the watermark
            # between trades: both take the records one by one, in frame order.
            for index, event in batch.items(self.decoder.symbols):
                self._on_event(event, frames[index].recv_ns)
            return
        for _, event in batch.others:
            self._on_event(event, 0)
        recv_ns = np.fromiter((f.recv_ns for f in frames), np.int64, n)
        if len(batch.trades):
            self._on_trade_columns(batch.trades, recv_ns)
        if len(books):
            self._on_quote_columns(books, recv_ns)

    def _on_trade_columns(
        self, trades: TradeColumns, recv_ns: np.ndarray, store: bool = True
    ) -> None:
        """``_on_trade`` for a burst: dedup and gaps per series, one table for the sink, one
        ``add_trades`` for the bars (held first when the burst opened a gap)."""
        symbols = self.decoder.symbols
        keep, gaps = observe_trades(self.gaps, trades, symbols)
        for gap in gaps:
            self.aggregator.hold(self.gaps.hold_ms())
            self._repair(gap)
        minute = self.telemetry.current
        duplicates = len(trades) - int(keep.sum())
        if duplicates:
            self.summary.duplicates += duplicates
            minute.counters["duplicates"] += duplicates
            trades = trades.take(np.flatnonzero(keep))
        if not len(trades):
            return
        if store:
            self._store_trades(trades, recv_ns[trades.index])
        bars = trades.take(np.flatnonzero(trades.kind == self._bar_kind))
        if len(bars):
            self._on_bars(
                self.aggregator.add_trades(
                    symbols, bars.code, bars.first, bars.last, bars.price, bars.qty, bars.ts,
                    ~bars.maker,
                )
            )  # fmt: skip

    def _store_trades(self, trades: TradeColumns, at: np.ndarray) -> None:
        symbols = self.decoder.symbols
        minute = self.telemetry.current
        names = [symbols[c] for c in trades.code.tolist()]
        table = trade_columns_table(
            names,
            [STREAM_NAMES[k] for k in trades.kind.tolist()],
            {
                "trade_id": trades.trade_id,
                "first_trade_id": trades.first,
                "last_trade_id": trades.last,
                "price": trades.price,
                "qty": trades.qty,
                "ts": trades.ts,
                "ts_init": at,
            },
            trades.maker,
            self.config.session_id,
        )
        self.sink.add_table("trades", table)
        self.summary.trades += len(trades)
        minute.counters["trades"] += len(trades)
        minute.lags_ms.extend((at / 1e6 - trades.ts).tolist())

    def _on_quote_columns(self, books: BookColumns, recv_ns: np.ndarray) -> None:
        """Quotes newer than the last stored update id of their symbol, as one table."""
        symbols = self.decoder.symbols
        keep = np.zeros(len(books), dtype=bool)
        for code in np.unique(books.code).tolist():
            rows = np.flatnonzero(books.code == code)
            ids = books.update_id[rows]
            last = self._last_quote_id.get(symbols[code], -1)
            before = np.maximum.accumulate(np.r_[last, ids[:-1]])
            newer = ids > before
            keep[rows[newer]] = True
            self._last_quote_id[symbols[code]] = max(last, int(ids.max()))
        rows = np.flatnonzero(keep)
        if not len(rows):
            return
        table = quote_columns_table(
            [symbols[c] for c in books.code[rows].tolist()],
            {
                "update_id": books.update_id[rows],
                "bid_price": books.bid[rows],
                "bid_qty": books.bid_qty[rows],
                "ask_price": books.ask[rows],
                "ask_qty": books.ask_qty[rows],
                "ts": books.ts[rows],
                "ts_init": recv_ns[books.index[rows]],
            },
            self.config.session_id,
        )
        self.sink.add_table("quotes", table)
        self.summary.quotes += len(rows)
        self.telemetry.current.counters["quotes"] += len(rows)

    def _on_event(self, event, recv_ns: int) -> None:
        """One decoded record (None: a rejected frame), as it arrived."""
        minute = self.telemetry.current.counters
        if isinstance(event, TradeEvent):
            self._on_trade(event, recv_ns, store=True)
        elif isinstance(event, BookTickerEvent):
            if event.ts_event_ms is not None:  # futures: the exchange clock moves bars on
                self._on_bars(self.aggregator.advance(event.ts_event_ms))
            if event.update_id > self._last_quote_id.get(event.symbol, -1):
                self._last_quote_id[event.symbol] = event.update_id
                self.sink.quotes.append((event, recv_ns))
                self.summary.quotes += 1
                minute["quotes"] += 1
                if self.nats:
                    self.nats.bbo(event, recv_ns)
        elif isinstance(event, ControlEvent):
            if "shutdown" in event.kind.lower():
                log.info("serverShutdown received: handing over to a new connection")
        elif event is None:
            minute["rejects"] += 1

    def _on_trade(self, ev: TradeEvent, recv_ns: int, store: bool) -> None:
        seen = self.gaps.observe(ev.symbol, ev.stream, ev.trade_id, ev.ts_event_ms)
        if seen == "dup":
            self.summary.duplicates += 1
            self.telemetry.current.counters["duplicates"] += 1
            return
        if isinstance(seen, Gap):
            self.aggregator.hold(self.gaps.hold_ms())
            self._repair(seen)
        if store:
            self.sink.trades.append((ev, recv_ns))
            self.summary.trades += 1
            minute = self.telemetry.current
            minute.counters["trades"] += 1
            minute.lags_ms.append(recv_ns / 1e6 - ev.ts_event_ms)
            if self.nats:
                self.nats.trade(ev, recv_ns)
        if ev.stream == self.config.bar_stream:
            self._on_bars(self.aggregator.add_trade(ev))

    def _on_bars(self, bars: list[BarRecord]) -> None:
        if not bars:
            return
        for bar in bars:
            self.sink.bars[(bar.symbol, bar.open_time_ms)] = bar
        self.summary.bars += len(bars)
        self.telemetry.current.counters["bars"] += len(bars)
        if self.nats:
            for bar in bars:
                self.nats.bar(bar)

    def _heartbeat(self, exchange_now_ms: int) -> None:
        """A quiet market still closes its bars on time (open gaps hold them). Recorded first
        (only when it moves the watermark), so a replay applies it at the same place."""
        agg = self.aggregator
        if agg.watermark_ms is not None and exchange_now_ms - agg.lateness_ms <= agg.watermark_ms:
            return
        self.log.append("conn", 0, time.time_ns(), b"", clock_meta(exchange_now_ms))
        self._on_bars(agg.heartbeat(exchange_now_ms))

    async def _read_clock(self, deadline: float | None) -> int | None:
        """Read the exchange's clock; None (and the last reading stays) when REST fails."""
        try:
            sent, server_ms, received = await asyncio.to_thread(self.rest.server_time, deadline)
        except Exception as exc:  # no reading: no heartbeat until the next one
            if not self.rest.stopping.is_set():
                log.warning("cannot read the exchange's clock: %s", exc)
            return None
        return self.clock.observe(sent, server_ms, received)

    # -- gap repair -------------------------------------------------------------------------------
    def _repair(self, gap: Gap) -> None:
        self.summary.gaps += 1
        self.telemetry.current.counters["gaps_opened"] += 1
        key = (gap.symbol, gap.stream)
        task = self._repairs.get(key)
        if task is None or task.done():
            self._repairs[key] = asyncio.get_running_loop().create_task(self._repair_task(key))

    async def _repair_task(self, key: tuple[str, str]) -> None:
        symbol, stream = key
        fetch = self.rest.agg_trades if stream == "aggTrade" else self.rest.historical_trades
        while True:
            open_gaps = [g for g in self.gaps.open_gaps() if (g.symbol, g.stream) == key]
            if not open_gaps:
                return
            gap = open_gaps[0]
            try:
                answer = await asyncio.to_thread(fetch, symbol, gap.first_id, REPAIR_PAGE)
            except Exception as exc:  # keep the gap open; retry shortly
                log.warning(
                    "REST repair of %s %s from %s failed: %s", symbol, stream, gap.first_id, exc
                )
                await asyncio.sleep(1.0)
                continue
            self.summary.rest_requests += 1
            applied = asyncio.get_running_loop().create_future()
            item = _RestItem(
                symbol, stream, answer.path, answer.params, answer.body, time.time_ns(), applied
            )
            await self.queue.put(item)
            # The processor applies the page (and logs it) in queue order; wait for that before
            # looking at the gaps again.
            events = await applied
            if not events:
                return  # nothing more on the exchange yet; the next gap restarts repair

    def _apply_rest(self, item: _RestItem, store: bool) -> list[TradeEvent]:
        meta = {
            "symbol": item.symbol,
            "stream": item.stream,
            "path": item.path,
            "params": item.params,
        }
        self.log.append("rest", 0, item.recv_ns, item.body, meta)
        events = decode_rest(item.path, item.body, item.symbol)
        before = self.gaps.ids_repaired
        if self.nats is not None:  # one NATS message per trade
            for ev in events:
                self._on_trade(ev, item.recv_ns, store=store)
        elif events:  # a page of up to 1000 trades: as columns, like a burst of frames
            recv_ns = np.full(len(events), item.recv_ns, dtype=np.int64)
            self._on_trade_columns(self.decoder.trade_columns(events), recv_ns, store)
        repaired = self.gaps.ids_repaired - before
        self._on_bars(self.aggregator.hold(self.gaps.hold_ms()))
        self.summary.trades_repaired += repaired
        self.telemetry.current.counters["trades_repaired"] += repaired
        if item.applied is not None and not item.applied.done():
            item.applied.set_result(events)
        return events

    # -- sinks and telemetry ----------------------------------------------------------------------
    def _release(self, force: bool = False) -> None:
        """The write-ahead gate, the only way rows reach a sink (module docstring): fsync the
        session log, then release what the sinks staged. Synchronous on purpose: nothing can
        be appended or staged between the fsync and the release. Nothing due: only an idle
        fsync when records have waited for ``fsync_every_seconds``."""
        due = [sink for sink in self.sinks if sink.due(force)]
        if not due:
            self.log.idle_sync()
            return
        if self.log.unsynced:
            self.log.sync()
        for sink in due:
            sink.release()
        self._released_at = time.monotonic()

    async def _flush_sinks(self) -> None:
        self._release()
        await self.sink.flush()
        if self.nats is not None:
            await self.nats.flush()

    def _roll_telemetry(self) -> None:
        now_ms = int(time.time() * 1000)
        for minute in self.telemetry.roll(now_ms):
            minute.counters["drops"] = self.client.stats.drops
            minute.gauges["queue_depth"] = float(self.queue.qsize())
            minute.gauges["open_gaps"] = float(len(self.gaps.open_gaps()))
            self.sink.telemetry.extend(minute.rows("binance", "live", self.config.session_id))

    def _connection_event(self, kind: str, conn_id: int, detail: str) -> None:
        if self.log is not None:
            payload = orjson.dumps({"event": kind, "detail": detail})
            self.log.append("conn", conn_id, time.time_ns(), payload)
        if kind == "replace" and detail in ("closed", "silent"):
            self.telemetry.current.counters["reconnects"] += 1

    # -- clean stop ------------------------------------------------------------------------------
    async def _stop_repairs(self) -> None:
        """On a stop, background repairs end and their requests still waiting for weight give
        up: under overload their pages would keep the queue from ever running dry (the stop
        would wait for every gap), and they would queue ahead of the catch-up that takes over
        their gaps in ``_finish``. Pages already queued are still applied."""
        self.rest.stopping.set()
        for task in self._repairs.values():
            task.cancel()
        await asyncio.gather(*self._repairs.values(), return_exceptions=True)

    async def _finish(self) -> None:
        await self._stop_repairs()
        # Bars are written up to the time every symbol is known to be complete: the exchange's
        # time at the stop, or earlier when the REST catch-up could not finish in its budget.
        budget = self.config.stop_budget_s
        read = await self._read_clock(time.monotonic() + min(5.0, budget))
        exchange_stop = read if read is not None else self._stop_fallback()
        stop_ms = await self._catch_up(exchange_stop, budget)
        self._on_bars(self.aggregator.flush(stop_ms))
        self._roll_telemetry()
        self.sink.telemetry.extend(
            self.telemetry.current.rows("binance", "live", self.config.session_id)
        )
        self._release(force=True)
        drained = await self.sink.drain(timeout_s=self.config.drain_timeout_s)  # hook (#15)
        closed = self.log.close(stop_ms)
        if self.nats:
            await self.nats.close()
            self.summary.nats_published = self.nats.published
            self.summary.nats_dropped = self.nats.dropped
        stats = self.client.stats
        self.summary.stop_exchange_ms = stop_ms
        self.summary.dropped_late = self.aggregator.dropped_late
        if self.aggregator.dropped_late:
            log.warning(
                "%d trades came too late to correct their bars (stored, not in bars_1m)",
                self.aggregator.dropped_late,
            )
        self.summary.drops = stats.drops
        self.summary.reconnects = stats.reconnects
        self.summary.handovers = stats.handovers
        self.summary.rejects = dict(self.normalizer.rejects)
        self.summary.rows_written = dict(self.sink.rows_written)
        self.summary.final_digest = getattr(closed, "final_digest", "") or self.log.digest
        self.summary.seconds = time.monotonic() - self._started
        if not drained:
            raise RuntimeError(
                f"{len(self.sink.pending)} batches could not be written to the warehouse "
                "before the stop deadline; they are in the session log for replay"
            )
        if self.lake is not None:
            await asyncio.to_thread(_upload_session, self.lake, Path(self.summary.session_dir))

    def _stop_fallback(self) -> int:
        """The stop time when the exchange's clock cannot be read: its last reading, else the
        latest exchange time seen (minutes known to have ended), else the local clock."""
        if self.clock.now_ms is not None:
            return self.clock.now_ms
        if self.aggregator.watermark_ms is not None:
            return self.aggregator.watermark_ms
        return time.time_ns() // 1_000_000

    async def _catch_up(self, stop_ms: int, budget_s: float) -> int:
        """Fetch every trade up to the stop time from REST (and repair open gaps), so the bars
        of every ended minute are complete when they are written. Returns the exchange time up
        to which all symbols are complete: ``stop_ms``, or less when the budget ran out."""
        deadline = time.monotonic() + budget_s
        complete = stop_ms
        stream = self.config.bar_stream
        fetch = self.rest.agg_trades if stream == "aggTrade" else self.rest.historical_trades
        for symbol in self.config.symbols:
            reached, done = None, False
            while time.monotonic() < deadline:
                open_gaps = [
                    g for g in self.gaps.open_gaps() if (g.symbol, g.stream) == (symbol, stream)
                ]
                last = self.gaps.last_ids().get((symbol, stream))
                start = open_gaps[0].first_id if open_gaps else (None if last is None else last + 1)
                if start is None:
                    done = True
                    break
                try:
                    answer = await asyncio.to_thread(fetch, symbol, start, REPAIR_PAGE, deadline)
                except Exception as exc:  # the stop must not hang on REST
                    log.warning("catch-up of %s failed: %s", symbol, exc)
                    break
                self.summary.rest_requests += 1
                item = _RestItem(
                    symbol, stream, answer.path, answer.params, answer.body, time.time_ns()
                )
                events = self._apply_rest(item, store=True)
                if not events or (not open_gaps and events[-1].ts_event_ms >= stop_ms):
                    done = True
                    break
                reached = events[-1].ts_event_ms
            if not done:
                log.warning(
                    "catch-up of %s stopped at %s: later bars are left open", symbol, reached
                )
                complete = min(complete, reached or 0)
        hold = self.gaps.hold_ms()
        return complete if hold is None else min(complete, hold)


def _as_rest_answer(stream: str, rows: list[tuple]) -> tuple[str, bytes]:
    """Stored trades (id, first, last, price, qty, ts_ms, maker) as the REST answer of their
    stream's endpoint, so the session log records them in a format replay decodes."""
    if stream == "aggTrade":
        return AGG_TRADES_PATH, orjson.dumps(
            [
                {
                    "a": r[0],
                    "f": r[1],
                    "l": r[2],
                    "p": r[3],
                    "q": r[4],
                    "T": r[5],
                    "m": bool(r[6]),
                    "M": True,
                }
                for r in rows
            ]
        )
    return HISTORICAL_TRADES_PATH, orjson.dumps(
        [
            {
                "id": r[0],
                "price": r[3],
                "qty": r[4],
                "time": r[5],
                "isBuyerMaker": bool(r[6]),
                "isBestMatch": True,
            }
            for r in rows
        ]
    )


def _upload_session(lake, session_dir: Path) -> None:
    """Closed session files to ``sessions/<id>/`` in the lake (the replay sensor looks there);
    the manifest goes last, so a session is never listed before its segments are there."""
    files = sorted(p for p in session_dir.iterdir() if p.is_file() and p.name != LOCK_FILE)
    files.sort(key=lambda p: p.name == "session.json")
    for path in files:
        lake.write_bytes(f"sessions/{session_dir.name}/{path.name}", path.read_bytes())
