"""The live ingestion pipeline (asyncio, one process): the live driver of the ingest kernel.

    socket readers --(bounded queue, drop+count when full)--> processor --> kernel --> sinks
                                                                  ^
                               REST gap repair (rate-limited) ---'

The processor is the only caller of the kernel (``quant_core.kernel.IngestKernel``). For every
item it first appends the raw bytes to the session log, then hands them to the kernel, which
decodes, de-duplicates by trade id, opens and holds gaps and aggregates; its output columns
are staged in every sink alike (``quant_resources.live.sinks.Sink``). This module owns only
what is live: sockets, the queue, scheduling REST repairs for the gaps the kernel reports, the
exchange clock's heartbeat, the write-ahead gate and the clean stop. REST answers and heartbeats
travel through the session log too, in the order they were applied, and replay feeds the same
records to the same kernel: live and replay are equal by construction. Order books are kernel
state too: the driver only fetches the depth snapshots the kernel requests
(``live.books.SnapshotFetcher``, through the queue like repair pages), records the kernel's
settings first and a restart record when a new connection may have missed frames.

Write-ahead rule: no row reaches a sink (ClickHouse, NATS, any other) before the records it came
from are durable in the session log. The log is written by a thread of its own
(``session_log_thread``): the processor hands records over and goes on; the thread encodes,
chains the hashes, writes and fsyncs (one fsync per drain: under load many bursts each). Each
kernel output waits with the log's ticket of its last record and is staged in the sinks only
once the thread has fsynced that far (``_stage_durable``, the one gate for every sink); sinks
stage, release and send nothing else. So a crash at any moment leaves nothing in ClickHouse or
NATS whose frames the log lacks, and neither fsync nor the hash chain runs on the event loop.
Sinks are released when they flush (the ticker every 0.2 s, a full buffer, NATS when the queue
runs dry or an fsync makes new events durable).

Bars are final once the exchange-time watermark has passed them by the lateness; while a gap
is open the kernel holds the aggregator at the time of the last trade before the gap, so a bar
is never final before its missing trades are repaired. A quiet market's minutes close on the
exchange's own clock (``/api/v3/time``, read once a second), never the local wall clock; each
heartbeat is recorded in the session log so replay applies it at the same place
(``quant_core.exchange_clock``). A trade for a minute already written writes a new version of
its bar. On a clean stop every bar whose minute has ended by the exchange's time at the stop is
written (after a REST catch-up to that time), never the still-open minute.
"""

from __future__ import annotations

import asyncio
import collections
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
from quant_core.book_session import has_depth
from quant_core.depth_decode import DEPTH_PATH
from quant_core.exchange_clock import ExchangeClock, clock_meta
from quant_core.gaps import Gap
from quant_core.kernel import FROM_WAREHOUSE, IngestKernel, KernelOutput, bar_stream
from quant_core.rest_decode import AGG_TRADES_PATH, HISTORICAL_TRADES_PATH
from quant_resources.binance.rest import BinanceRest
from quant_resources.binance.stream import BinanceStreamClient, FrameBurst, RawFrame
from quant_resources.binance.urls import stream_names
from quant_resources.live.books import BookSink, SnapshotFetcher
from quant_resources.live.redis_sink import RedisSink
from quant_resources.live.sinks import NatsSink, Sink, TelemetrySink, WarehouseSink
from quant_resources.session_lock import LOCK_FILE
from quant_resources.session_log_thread import SessionLogThread
from quant_resources.session_writer import SessionWriter

log = logging.getLogger(__name__)
REPAIR_PAGE = 1000
CLOCK_EVERY_S = 1.0  # seconds between readings of the exchange's clock
# Records the session log's thread may have waiting before the processor waits for it.
LOG_BACKLOG_MAX = 50_000
DRAIN_MAX = 4096  # frames taken from the queue per burst (a socket read's burst is not split)
# Prompt sinks (NATS) are flushed as the queue runs dry, each time behind an fsync of the log:
# at most this often, so a trickle of frames costs a bounded number of fsyncs per second.
PROMPT_GATE_S = 0.05


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
    redis_url: str | None = None  # latest values and final bars in Redis (RedisSink)
    silence_s: float = 30.0
    stop_budget_s: float = 60.0  # REST catch-up time allowed on a clean stop
    book_depth: int = 20  # levels a side per book snapshot (with depth streams)
    book_interval_ms: int = 1000  # exchange ms between book snapshots
    session_id: str = field(
        default_factory=lambda: (
            f"live-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"
        )
    )

    @property
    def bar_stream(self) -> str:
        return bar_stream(self.streams)


@dataclass
class RestAnswer:
    """A REST answer on its way to the processor (``applied``: told how many trades it held;
    ``request_id``: the kernel's ``SnapshotRequest`` a depth answer answers)."""

    symbol: str
    stream: str
    path: str
    params: dict
    body: bytes
    recv_ns: int
    applied: asyncio.Future | None = None
    request_id: int | None = None


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
    ids_absent: int = 0  # missing trade ids REST does not have either (lost for good)
    rest_requests: int = 0
    drops: int = 0
    reconnects: int = 0
    handovers: int = 0
    rejects: dict = field(default_factory=dict)
    stop_exchange_ms: int | None = None
    dropped_late: int = 0  # trades too late for their bar (beyond a day): never silent
    rows_written: dict = field(default_factory=dict)
    sinks: dict = field(default_factory=dict)  # each sink's ``stats()``, by sink name
    final_digest: str = ""
    seconds: float = 0.0
    books: dict = field(default_factory=dict)  # the kernel's book counts (with depth)
    profile: str | None = None  # the cProfile stats file of ``quant live --profile``


class LivePipeline:
    def __init__(self, config: LiveConfig, warehouse, lake=None) -> None:
        self.config = config
        self.warehouse = warehouse
        self.lake = lake
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=config.queue_size)
        self.kernel = IngestKernel(
            config.symbols,
            config.streams,
            config.lateness_ms,
            "binance",
            config.book_depth,
            config.book_interval_ms,
        )
        self.rest = BinanceRest(config.rest_url)
        self.client = BinanceStreamClient(
            config.ws_url,
            stream_names(config.symbols, config.streams),
            self.queue,
            silence_s=config.silence_s,
        )
        self.sinks: dict[str, Sink] = build_sinks(config, warehouse, int(time.time() * 1000))
        self.snapshots = SnapshotFetcher(self.rest, self._deliver_snapshot)
        self._handover = False  # a handover's old connection streams until the new one does
        self._released_at = 0.0
        self._sender: asyncio.Task | None = None  # sends released rows (processor, ticker)
        self.log: SessionLogThread | None = None
        # Kernel outputs (with the log's ticket of their last record) not yet fsynced.
        self._unstaged: collections.deque[tuple[int, KernelOutput]] = collections.deque()
        self._prompt_task: asyncio.Task | None = None  # sends prompt sinks' rows (_on_durable)
        self.summary = LiveSummary(config.session_id, str(config.session_root / config.session_id))
        if self.kernel.books is not None:  # the same dict, kept current by the kernel
            self.summary.books = self.kernel.books.counts
        self.stop = asyncio.Event()
        self.clock = ExchangeClock()
        self._clock_task: asyncio.Task | None = None
        self._reconnects = 0  # connection replacements in the telemetry's current minute
        self._absent_counted = 0  # ids_absent already counted in a closed telemetry minute
        self._repairs: dict[tuple[str, str], asyncio.Task] = {}
        self.status: Callable[[LiveSummary, LivePipeline], None] = lambda s, p: None
        self._started = time.monotonic()

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> LiveSummary:
        cfg = self.config
        cfg.session_root.mkdir(parents=True, exist_ok=True)
        writer = SessionWriter(
            cfg.session_root,
            cfg.session_id,
            "binance",
            cfg.streams,
            cfg.symbols,
            f"quant {__version__}",
            # The log's thread decides when to fsync (the gate, or records waiting 1 s).
            fsync_every_records=2**62,
            fsync_every_seconds=float("inf"),
        )
        self.log = SessionLogThread(writer, asyncio.get_running_loop(), self._on_durable)
        self.client.on_event = self._connection_event
        # numpy's first ``unique`` imports numpy.ma (about a second on a loaded machine): paid
        # before the first frame, not by the first burst while frames queue up (profiled).
        np.unique(np.zeros(2, np.int64))
        for sink in self.sinks.values():
            await sink.start()
        self._record_settings()
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

    def telemetry_minute(self):
        """The telemetry sink's current (wall-clock) minute, or None without that sink."""
        telemetry = self.sinks.get("telemetry")
        return telemetry.clock.current if isinstance(telemetry, TelemetrySink) else None

    def lags_ms(self) -> list[float]:
        """Receive lags of the trades of the current telemetry minute (the status line)."""
        minute = self.telemetry_minute()
        return minute.lags_ms if minute is not None else []

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
            # Never awaits an insert: a ticker waiting on a slow ClickHouse would not stop the
            # run at its duration, nor roll the telemetry.
            self._send_sinks()
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
                RestAnswer(
                    symbol,
                    stream,
                    path,
                    {"origin": FROM_WAREHOUSE, "from_ms": start_ms},
                    body,
                    time.time_ns(),
                ),
            )
            log.info("resumed %s %s after trade id %s", symbol, stream, last_id)

    def _seed(self, symbol: str, stream: str, last_id: int, last_ts_ms: int) -> None:
        """Ids up to ``last_id`` are accounted for; recorded so a replay seeds the same way."""
        meta = {
            "event": "seed",
            "symbol": symbol,
            "stream": stream,
            "last_id": last_id,
            "last_ts_ms": last_ts_ms,
        }
        self._conn_record(meta)

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
            taken = _frame_count(item)
            while taken < DRAIN_MAX and not queue.empty():
                item = queue.get_nowait()
                items.append(item)
                taken += _frame_count(item)
            self.client.taken(taken)
            frames: list[RawFrame | FrameBurst] = []
            for item in items:
                if isinstance(item, RawFrame | FrameBurst):
                    frames.append(item)
                    continue
                if frames:
                    self._on_frames(frames)
                    frames = []
                self._apply_rest(item)
            if frames:
                self._on_frames(frames)
            if self.log.backlog > LOG_BACKLOG_MAX:
                # The log's thread is behind: wait for it rather than queue without bound. The
                # socket readers go on meanwhile (what overflows the queue is dropped, counted
                # and repaired from REST).
                await self.log.durable()
            self._stage_durable()
            sinks = self.sinks.values()
            if any(sink.buffered() >= self.config.flush_rows for sink in sinks):
                # Released now (the gate), sent by a task: the processor goes on reading the
                # queue while ClickHouse takes the insert (sinks send in order, one at a time).
                self._send_sinks()
            # Prompt sinks' consumers (NATS) want events promptly: release when the queue runs
            # dry (or their buffer grows), one await per burst rather than one per frame; what
            # is not durable yet goes when the log's thread has fsynced it (``_on_durable``).
            prompt = [sink for sink in sinks if sink.prompt and sink.buffered()]
            if (
                prompt
                and (queue.empty() or max(sink.buffered() for sink in prompt) >= 1000)
                and time.monotonic() - self._released_at >= PROMPT_GATE_S
            ):
                self._release()
                await self._flush(prompt)

    def _on_frames(self, frames: list[RawFrame | FrameBurst]) -> None:
        """Frames in queue order (single frames or a socket read's burst each)."""
        records: list[tuple[int, int, bytes]] = []
        datas: list[bytes] = []
        recv: list[int] = []
        for item in frames:
            if isinstance(item, FrameBurst):
                conn_id, recv_ns, burst = item.conn_id, item.recv_ns, item.frames
                records += [(conn_id, recv_ns, data) for data in burst]
                datas += burst
                recv += [recv_ns] * len(burst)
            else:
                records.append((item.conn_id, item.recv_ns, item.data))
                datas.append(item.data)
                recv.append(item.recv_ns)
        # Write-ahead: logged before anything is applied.
        self.log.append_many("ws", records)
        self._emit(self.kernel.frames(datas, np.array(recv, np.int64)))

    def _emit(self, out: KernelOutput) -> None:
        """The kernel's output: repairs for the gaps it opened, the same columns to every sink."""
        summary = self.summary
        summary.frames += out.frames
        summary.trades += len(out.trades)
        summary.quotes += len(out.quotes)
        summary.bars += len(out.bars)
        summary.duplicates += out.duplicates
        summary.trades_repaired += out.repaired
        summary.ids_absent = self.kernel.gaps.ids_absent
        for control in out.controls:
            if "shutdown" in control.kind.lower():
                log.info("serverShutdown received: handing over to a new connection")
        for gap in out.gaps:
            self._repair(gap)
        if out.books is not None:
            for request in out.books.output.requests:
                self.snapshots.fetch(request)
        # Staged once the log's thread has fsynced the records it came from (the gate).
        self._unstaged.append((self.log.ticket, out))

    def _heartbeat(self, exchange_now_ms: int) -> None:
        """A quiet market still closes its bars on time (open gaps hold them). Recorded first
        (only when it moves the watermark), so a replay applies it at the same place."""
        if not self.kernel.clock_moves(exchange_now_ms):
            return
        self._conn_record(clock_meta(exchange_now_ms))

    def _record_settings(self) -> None:
        """The kernel's settings, recorded before any frame so a replay applies the same."""
        for meta in self.kernel.settings():
            self._conn_record(meta)

    def _conn_record(self, meta: dict) -> None:
        """A connection record the kernel acts on: logged, then applied."""
        now = time.time_ns()
        self.log.append("conn", 0, now, b"", meta)
        self._emit(self.kernel.conn(meta, now))

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
        key = (gap.symbol, gap.stream)
        task = self._repairs.get(key)
        if task is None or task.done():
            self._repairs[key] = asyncio.get_running_loop().create_task(self._repair_task(key))

    async def _repair_task(self, key: tuple[str, str]) -> None:
        symbol, stream = key
        fetch = self.rest.agg_trades if stream == "aggTrade" else self.rest.historical_trades
        while True:
            open_gaps = self.kernel.open_gaps(symbol, stream)
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
            item = RestAnswer(
                symbol, stream, answer.path, answer.params, answer.body, time.time_ns(), applied
            )
            await self.queue.put(item)
            # The processor applies the page (and logs it) in queue order; wait for that before
            # looking at the gaps again.
            if not await applied:  # how many trades the page held
                return  # nothing more on the exchange yet; the next gap restarts repair

    def _apply_rest(self, item: RestAnswer) -> KernelOutput:
        """Log a REST answer, then apply it."""
        meta = {
            "symbol": item.symbol,
            "stream": item.stream,
            "path": item.path,
            "params": item.params,
        }
        if item.request_id is not None:
            meta["request_id"] = item.request_id
        self.log.append("rest", 0, item.recv_ns, item.body, meta)
        out = self.kernel.rest(
            item.path, item.body, item.symbol, item.recv_ns, item.params, item.request_id
        )
        self._emit(out)
        if item.applied is not None and not item.applied.done():
            item.applied.set_result(out.rest_trades)
        return out

    # -- sinks and telemetry ----------------------------------------------------------------------
    def _stage_durable(self) -> None:
        """The write-ahead gate, the only way output reaches a sink (module docstring): the
        kernel's outputs whose records the log's thread has fsynced are staged in every sink,
        in order; later ones wait for their fsync."""
        pending, durable = self._unstaged, self.log.durable_ticket
        sinks = self.sinks.values()
        while pending and pending[0][0] <= durable:
            out = pending.popleft()[1]
            for sink in sinks:
                sink.stage(out)

    def _on_durable(self) -> None:
        """(On the loop, after each fsync of the log's thread) stage what became durable;
        prompt sinks (NATS) send it now when the processor has nothing to read."""
        self._stage_durable()
        if self.queue.empty():
            self._send_prompt()

    def _send_prompt(self) -> None:
        prompt = [sink for sink in self.sinks.values() if sink.prompt and sink.buffered()]
        if prompt and time.monotonic() - self._released_at >= PROMPT_GATE_S:
            self._release()
            if self._prompt_task is None or self._prompt_task.done():
                self._prompt_task = asyncio.create_task(self._flush(prompt), name="prompt-send")

    def _release(self, force: bool = False) -> None:
        """Release what the sinks staged (all of it durable: ``_stage_durable``)."""
        self._stage_durable()
        for sink in self.sinks.values():
            if sink.due(force):
                sink.release()
        self._released_at = time.monotonic()

    async def _flush(self, sinks) -> None:
        for sink in sinks:
            await sink.flush()

    async def _send_released(self) -> None:
        await self._flush(self.sinks.values())

    def _send_sinks(self) -> None:
        """Release what is due; the sender task sends it (one at a time, in order)."""
        self._release()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_released(), name="sink-send")

    def _roll_telemetry(self, final: bool = False) -> None:
        """Close the wall-clock minute of the telemetry sink (``final``: also the current one)
        with what only the driver knows."""
        telemetry = self.sinks.get("telemetry")
        if not isinstance(telemetry, TelemetrySink):
            return
        absent = self.kernel.gaps.ids_absent
        counters = {
            "drops": self.client.stats.drops,
            "reconnects": self._reconnects,
            "ids_absent": absent - self._absent_counted,
        }
        gauges = {
            "queue_depth": float(self.queue.qsize()),
            "open_gaps": float(len(self.kernel.open_gaps())),
        }
        if telemetry.roll(int(time.time() * 1000), counters, gauges):
            counters["reconnects"] = self._reconnects = 0  # counted in the closed minute
            counters["ids_absent"], self._absent_counted = 0, absent
        if final:
            telemetry.close_current(counters, gauges)

    def _connection_event(self, kind: str, conn_id: int, detail: str) -> None:
        if self.log is not None:
            payload = orjson.dumps({"event": kind, "detail": detail})
            self.log.append("conn", conn_id, time.time_ns(), payload)
            self._restart(kind, detail)
        if kind == "replace" and detail in ("closed", "silent"):
            self._reconnects += 1  # for the telemetry of the minute

    def _restart(self, kind: str, detail: str) -> None:
        """A new connection ("open") after a drop: frames may be missing since the last one, so
        the kernel's state that depends on an unbroken stream (the books) starts over, recorded
        first. A handover's old connection streams until the new one delivers: nothing missed."""
        if kind == "replace":
            self._handover = detail in ("aged", "shutdown")
        if kind != "open":
            return
        if self._handover:
            self._handover = False
            return
        meta = self.kernel.restart_meta()
        if meta is not None:
            self._conn_record(meta)

    async def _deliver_snapshot(
        self, symbol: str, request_id: int, params: dict, body: bytes, recv_ns: int
    ) -> None:
        """A depth snapshot the kernel asked for: through the queue like a repair page, so it
        is logged and applied in queue order."""
        answer = RestAnswer(symbol, "depth", DEPTH_PATH, params, body, recv_ns)
        answer.request_id = request_id
        await self.queue.put(answer)

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
        if self._sender is not None:
            await self._sender  # its errors stay in the sinks (retried by their close)
        # Bars are written up to the time every symbol is known to be complete: the exchange's
        # time at the stop, or earlier when the REST catch-up could not finish in its budget.
        budget = self.config.stop_budget_s
        read = await self._read_clock(time.monotonic() + min(5.0, budget))
        exchange_stop = read if read is not None else self._stop_fallback()
        stop_ms = await self._catch_up(exchange_stop, budget)
        self._emit(self.kernel.flush(stop_ms))
        self._roll_telemetry(final=True)
        await self.log.durable()  # everything is staged (the gate) before the sinks close
        if self._prompt_task is not None:
            await self._prompt_task
        self._release(force=True)
        await self.snapshots.close()  # depth fetches stop before the sinks close
        failed: Exception | None = None
        for name, sink in self.sinks.items():
            try:
                await sink.close()  # sends what is left (the warehouse: raises if it cannot)
            except Exception as exc:
                log.error("sink %s could not send all it holds: %s", name, exc)
                failed = failed or exc
        closed = self.log.close(stop_ms)
        summary = self.summary
        stats = self.client.stats
        summary.stop_exchange_ms = stop_ms
        dropped_late = self.kernel.aggregator.dropped_late
        summary.dropped_late = dropped_late
        if dropped_late:
            log.warning(
                "%d trades came too late to correct their bars (stored, not in bars_1m)",
                dropped_late,
            )
        summary.drops = stats.drops
        summary.reconnects = stats.reconnects
        summary.handovers = stats.handovers
        summary.rejects = dict(self.kernel.normalizer.rejects)
        summary.sinks = {name: sink.stats() for name, sink in self.sinks.items()}
        summary.rows_written = dict(summary.sinks.get("warehouse", {}))
        summary.final_digest = getattr(closed, "final_digest", "") or self.log.digest
        summary.seconds = time.monotonic() - self._started
        if failed is not None:
            raise failed
        if self.lake is not None:
            await asyncio.to_thread(_upload_session, self.lake, Path(self.summary.session_dir))

    def _stop_fallback(self) -> int:
        """The stop time when the exchange's clock cannot be read: its last reading, else the
        latest exchange time seen (minutes known to have ended), else the local clock."""
        if self.clock.now_ms is not None:
            return self.clock.now_ms
        if self.kernel.watermark_ms is not None:
            return self.kernel.watermark_ms
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
                open_gaps = self.kernel.open_gaps(symbol, stream)
                last = self.kernel.gaps.last_ids().get((symbol, stream))
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
                item = RestAnswer(
                    symbol, stream, answer.path, answer.params, answer.body, time.time_ns()
                )
                out = self._apply_rest(item)
                last_ms = out.rest_last_ms
                if last_ms is None or (not open_gaps and last_ms >= stop_ms):
                    done = True
                    break
                reached = last_ms
            if not done:
                log.warning(
                    "catch-up of %s stopped at %s: later bars are left open", symbol, reached
                )
                complete = min(complete, reached or 0)
        hold = self.kernel.hold_ms()
        return complete if hold is None else min(complete, hold)


def _frame_count(item) -> int:
    """Frames in one queue item (a REST answer counts none)."""
    if isinstance(item, FrameBurst):
        return len(item.frames)
    return 1 if isinstance(item, RawFrame) else 0


def build_sinks(config: LiveConfig, warehouse, now_ms: int) -> dict[str, Sink]:
    """Every sink of a live run, by name, in the order they are released and closed. A new
    sink is a class implementing ``Sink`` (``quant_resources.live.sinks``) and one line here."""
    clickhouse = WarehouseSink(
        warehouse, config.session_id, config.flush_rows, config.flush_seconds
    )
    sinks: dict[str, Sink] = {
        "warehouse": clickhouse,
        "telemetry": TelemetrySink(clickhouse, config.session_id, now_ms),
    }
    if config.nats_url:
        sinks["nats"] = NatsSink(config.nats_url)
    if config.redis_url:
        sinks["redis"] = RedisSink(config.redis_url)
    if has_depth(config.streams):
        sinks["books"] = BookSink(
            warehouse, config.session_id, config.flush_rows, config.flush_seconds
        )
    return sinks


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
