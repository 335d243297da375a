"""The sinks of the live pipeline, behind one protocol (:class:`Sink`).

A sink consumes the ingest kernel's output columns (``quant_core.kernel.KernelOutput``:
trades, quotes, bars with versions, gaps, rejects) and nothing else: no sink changes how
records are processed, and the pipeline treats every sink alike.

Every sink has two stages: ``stage(output)`` takes rows as the kernel produces them, and only
rows the pipeline's write-ahead gate has *released* leave the process (``release`` runs right
after the session log's fsync, with no await in between; ``flush`` sends released rows only).
A sink never decides on its own to send staged rows: that is what keeps a row out of
ClickHouse, NATS or any other sink until the frames it came from are durable in the session
log. Adding a sink is a class implementing :class:`Sink` and one line in ``build_sinks``; a
sink that wants one call per event (JSON messages) subclasses :class:`EventSink`.

ClickHouse: rows are batched per table and flushed by size or age. Each batch gets a
deterministic insert deduplication token, so a retried insert (timeout after the server had
already written it) never duplicates. While the warehouse is down, batches queue in memory in
order and are retried with backoff; nothing is dropped.

NATS: normalised events as JSON on ``v1.market.{trades,bbo,bars}.binance.{symbol}[.1m]``, and
book snapshots (sessions with depth) on ``v1.market.book.binance.{symbol}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import numpy as np
import orjson
import pyarrow as pa

from quant_core.bars import BarRecord, bars_to_arrow
from quant_core.decode import STREAM_NAMES, BookTickerEvent, TradeEvent
from quant_core.depth_sync import BookSnapshot
from quant_core.kernel import KernelOutput
from quant_core.tables import decimal_from_scaled
from quant_core.telemetry import TelemetryClock

log = logging.getLogger(__name__)
TS_MS = pa.timestamp("ms", tz="UTC")
TS_NS = pa.timestamp("ns", tz="UTC")


class Sink(Protocol):
    """What the live pipeline asks of every sink (module docstring).

    ``prompt``: the sink wants its rows released as soon as the queue runs dry (a low-latency
    feed such as NATS) rather than on the warehouse's size/age schedule. ``start`` runs before
    the first frame, ``close`` after the last release (it sends what is left)."""

    prompt: bool

    async def start(self) -> None: ...
    def stage(self, out: KernelOutput) -> None: ...
    def buffered(self) -> int: ...
    def due(self, force: bool = False) -> bool: ...
    def release(self) -> None: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...


def _strings(values: list[str] | pa.Array) -> pa.Array:
    return values if isinstance(values, pa.Array) else pa.array(values, pa.string())


def _codes_as_strings(names: list[str], codes: np.ndarray) -> pa.Array:
    """``[names[c] for c in codes]`` built in Arrow (no Python string per row)."""
    return pa.array(names, pa.string()).take(pa.array(codes))


def trade_columns_table(
    symbol: list[str] | pa.Array,
    stream: list[str] | pa.Array,
    ints: dict[str, np.ndarray],
    is_buyer_maker: np.ndarray,
    session_id: str,
    origin: str = "stream",
) -> pa.Table:
    """The ``trades`` rows; ``ints`` holds trade_id, first/last_trade_id, price and qty
    (scaled by 10**8), ts (exchange ms) and ts_init (receive ns). ``origin`` (migration 0012):
    ``stream`` for websocket trades, ``rest`` for trades a REST page brought."""
    n = len(symbol)
    return pa.table(
        {
            "source": pa.repeat(pa.scalar("binance"), n),
            "symbol": _strings(symbol),
            "stream": _strings(stream),
            "trade_id": pa.array(ints["trade_id"], pa.uint64()),
            "first_trade_id": pa.array(ints["first_trade_id"], pa.uint64()),
            "last_trade_id": pa.array(ints["last_trade_id"], pa.uint64()),
            "price": decimal_from_scaled(ints["price"], 8),
            "qty": decimal_from_scaled(ints["qty"], 8),
            "is_buyer_maker": pa.array(is_buyer_maker, pa.bool_()),
            "ts": pa.array(ints["ts"], pa.int64()).cast(TS_MS),
            "ts_init": pa.array(ints["ts_init"], pa.int64()).cast(TS_NS),
            "session_id": pa.repeat(pa.scalar(session_id), n),
            "origin": pa.repeat(pa.scalar(origin, pa.string()), n),  # counted in coverage_1m
        }
    )


def quote_columns_table(symbol: list[str] | pa.Array, ints: dict[str, np.ndarray], session_id: str):
    """The ``quotes`` rows; ``ints`` holds update_id, bid/ask price and qty (scaled by 10**8),
    ts (exchange ms, -1 when the event has none) and ts_init (receive ns)."""
    n = len(symbol)
    # Spot book tickers carry no exchange time: the receive time stands in for it.
    ts = np.where(ints["ts"] >= 0, ints["ts"], ints["ts_init"] // 1_000_000)
    return pa.table(
        {
            "source": pa.repeat(pa.scalar("binance"), n),
            "symbol": _strings(symbol),
            "update_id": pa.array(ints["update_id"], pa.uint64()),
            **{
                name: decimal_from_scaled(ints[name], 8)
                for name in ("bid_price", "bid_qty", "ask_price", "ask_qty")
            },
            "ts": pa.array(ts, pa.int64()).cast(TS_MS),
            "ts_init": pa.array(ints["ts_init"], pa.int64()).cast(TS_NS),
            "session_id": pa.repeat(pa.scalar(session_id), n),
        }
    )


def output_tables(out: KernelOutput, session_id: str) -> dict[str, pa.Table]:
    """The ``trades`` and ``quotes`` rows of one kernel output, as the warehouse stores them
    (empty kinds left out): every sink that wants rows builds them here."""
    tables: dict[str, pa.Table] = {}
    symbols = out.symbols
    t = out.trades
    if len(t):
        tables["trades"] = trade_columns_table(
            _codes_as_strings(list(symbols), t.code),
            _codes_as_strings(
                [STREAM_NAMES.get(k, "") for k in range(max(STREAM_NAMES) + 1)], t.kind
            ),
            {
                "trade_id": t.trade_id,
                "first_trade_id": t.first,
                "last_trade_id": t.last,
                "price": t.price,
                "qty": t.qty,
                "ts": t.ts,
                "ts_init": out.trade_recv_ns,
            },
            t.maker,
            session_id,
            # archive: the kernel emits a REST page's trades as their own output (coverage_1m)
            "rest" if out.rest_trades else "stream",
        )
    q = out.quotes
    if len(q):
        tables["quotes"] = quote_columns_table(
            _codes_as_strings(list(symbols), q.code),
            {
                "update_id": q.update_id,
                "bid_price": q.bid,
                "bid_qty": q.bid_qty,
                "ask_price": q.ask,
                "ask_qty": q.ask_qty,
                "ts": q.ts,
                "ts_init": out.quote_recv_ns,
            },
            session_id,
        )
    return tables


@dataclass
class _Batch:
    table: str
    data: pa.Table
    token: str


@dataclass
class WarehouseSink:
    """ClickHouse: stages the kernel's trades, quotes and bars (and the telemetry sink's rows)
    per table; ``release`` cuts them into batches (called by the write-ahead gate only),
    ``flush`` / ``drain`` move released batches to ClickHouse."""

    warehouse: object
    session_id: str
    flush_rows: int = 5000
    flush_seconds: float = 1.0
    tables: dict[str, list[pa.Table]] = field(default_factory=lambda: {"trades": [], "quotes": []})
    # Latest version per (symbol, minute): a burst of corrections (a large repair) writes once.
    bars: dict = field(default_factory=dict)
    telemetry: list[tuple] = field(default_factory=list)
    pending: deque = field(default_factory=deque)
    batches: int = 0
    rows_written: dict = field(default_factory=lambda: {"trades": 0, "quotes": 0, "bars_1m": 0})
    failures: int = 0
    drain_timeout_s: float = 120.0
    prompt: bool = False
    _last_flush: float = field(default_factory=time.monotonic)
    _retry_at: float = 0.0
    _retry_delay: float = 0.5
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def start(self) -> None:
        # Arrow's first ``take`` imports pyarrow.compute and pandas (about a second of CPU):
        # paid here, before the first frame, not by the first burst while frames queue up.
        _codes_as_strings(["warm-up"], np.zeros(1, np.int64))

    def buffered(self) -> int:
        chunks = sum(t.num_rows for tables in self.tables.values() for t in tables)
        return len(self.bars) + chunks

    def stage(self, out: KernelOutput) -> None:
        for table, rows in output_tables(out, self.session_id).items():
            self.tables[table].append(rows)
        for bar in out.bars:
            self.bars[(bar.symbol, bar.open_time_ms)] = bar

    def due(self, force: bool = False) -> bool:
        """Whether staged rows should be released now: by size or age, or ``force``."""
        staged = self.buffered()
        return bool(staged) and (
            force
            or staged >= self.flush_rows
            or time.monotonic() - self._last_flush >= self.flush_seconds
        )

    def release(self) -> None:
        """Turn staged rows into immutable batches with their dedup tokens, ready to send.
        Only the write-ahead gate calls this, right after the session log's fsync."""
        if self.bars:
            self.tables["bars_1m"] = [bars_to_arrow(list(self.bars.values()))]
            self.bars.clear()
        if self.telemetry:
            self.tables["telemetry"] = [_telemetry_table(self.telemetry)]
            self.telemetry.clear()
        for table, chunks in self.tables.items():  # trades, quotes, bars_1m, telemetry
            if chunks:
                self.batches += 1
                data = pa.concat_tables(chunks) if len(chunks) > 1 else chunks[0]
                self.pending.append(
                    _Batch(table, data, f"{self.session_id}:{table}:{self.batches}")
                )
                chunks.clear()
        self._last_flush = time.monotonic()

    async def flush(self) -> None:
        """Insert the released batches, in order (staged rows wait for ``release``)."""
        # The processor and the ticker both flush; one insert of a batch at a time.
        async with self._lock:
            await self._flush()

    async def _flush(self) -> None:
        if not self.pending or time.monotonic() < self._retry_at:
            return
        # Only the batches released before this flush: the processor releases more while an
        # insert runs, and a flush that chased them would never end when ClickHouse takes
        # rows slower than they arrive (the ticker waiting on it never stopped the run).
        for _ in range(len(self.pending)):
            batch = self.pending[0]
            try:
                await asyncio.to_thread(
                    self.warehouse.insert, batch.table, batch.data, dedup_token=batch.token
                )
            except Exception as exc:
                self.failures += 1
                self._retry_at = time.monotonic() + self._retry_delay
                self._retry_delay = min(self._retry_delay * 2, 15.0)
                log.warning(
                    "warehouse insert of %s failed (%s); %d batches buffered",
                    batch.table,
                    exc,
                    len(self.pending),
                )
                return
            self.pending.popleft()
            self._retry_delay = 0.5
            if batch.table in self.rows_written:
                self.rows_written[batch.table] += batch.data.num_rows

    async def drain(self, timeout_s: float) -> bool:
        """Insert every released batch, retrying through an outage for up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:
            self._retry_at = 0.0
            await self.flush()
            if self.pending:
                await asyncio.sleep(min(self._retry_delay, 1.0))
        return not self.pending

    def stats(self) -> dict[str, int]:
        return dict(self.rows_written)

    async def close(self) -> None:
        """Insert every released batch; raises when the warehouse could not take them in
        ``drain_timeout_s`` (they are in the session log for replay)."""
        if not await self.drain(self.drain_timeout_s):
            raise RuntimeError(
                f"{len(self.pending)} batches could not be written to the warehouse "
                "before the stop deadline; they are in the session log for replay"
            )


class TelemetrySink:
    """Per-minute operational metrics (``quant_core.telemetry``) from the kernel's output;
    closed minutes become ``telemetry`` rows staged in the warehouse sink. The counters the
    kernel cannot know (drops, reconnects, queue depth) are given to ``roll``."""

    prompt = False

    def __init__(self, warehouse: WarehouseSink, session_id: str, now_ms: int) -> None:
        self.warehouse = warehouse
        self.session_id = session_id
        self.clock = TelemetryClock(now_ms)

    async def start(self) -> None:
        return None

    def stage(self, out: KernelOutput) -> None:
        minute = self.clock.current
        counters = minute.counters
        if out.frames:
            counters["messages"] += out.frames
            counters["bytes"] += out.bytes
        counters["trades"] += len(out.trades)
        counters["quotes"] += len(out.quotes)
        counters["bars"] += len(out.bars)
        counters["rejects"] += len(out.rejects)
        counters["gaps_opened"] += len(out.gaps)
        counters["trades_repaired"] += out.repaired
        counters["duplicates"] += out.duplicates
        if len(out.trades):
            minute.lags_ms.extend((out.trade_recv_ns / 1e6 - out.trades.ts).tolist())

    def roll(self, now_ms: int, counters: dict[str, int], gauges: dict[str, float]) -> bool:
        """Close the minute when the wall clock has left it (True when it did)."""
        closed = self.clock.roll(now_ms)
        for minute in closed:
            self._close(minute, counters, gauges)
        return bool(closed)

    def close_current(self, counters: dict[str, int], gauges: dict[str, float]) -> None:
        self._close(self.clock.current, counters, gauges)

    def _close(self, minute, counters: dict[str, int], gauges: dict[str, float]) -> None:
        minute.counters.update(counters)
        minute.gauges.update(gauges)
        self.warehouse.telemetry.extend(minute.rows("binance", "live", self.session_id))

    def buffered(self) -> int:
        return 0

    def due(self, force: bool = False) -> bool:
        return False  # its rows are released by the warehouse sink

    def release(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def stats(self) -> dict[str, int]:
        return {}


class EventSink:
    """A sink that takes the kernel's output one event at a time, in the order trades,
    quotes, bars of each output: subclasses implement ``trade``, ``bbo`` and ``bar`` (and the
    rest of :class:`Sink`)."""

    prompt = True

    def stage(self, out: KernelOutput) -> None:
        symbols = out.symbols
        t = out.trades
        if len(t):
            for row in zip(
                t.code.tolist(),
                t.kind.tolist(),
                t.trade_id.tolist(),
                t.first.tolist(),
                t.last.tolist(),
                t.price.tolist(),
                t.qty.tolist(),
                t.ts.tolist(),
                t.maker.tolist(),
                out.trade_recv_ns.tolist(),
                strict=True,
            ):
                code, kind, trade_id, first, last, price, qty, ts, maker, recv_ns = row
                ev = TradeEvent(
                    symbols[code], STREAM_NAMES[kind], trade_id, first, last, price, qty, ts, maker
                )
                self.trade(ev, recv_ns)
        q = out.quotes
        if len(q):
            for code, uid, bid, bid_qty, ask, ask_qty, ts, recv_ns in zip(
                q.code.tolist(),
                q.update_id.tolist(),
                q.bid.tolist(),
                q.bid_qty.tolist(),
                q.ask.tolist(),
                q.ask_qty.tolist(),
                q.ts.tolist(),
                out.quote_recv_ns.tolist(),
                strict=True,
            ):
                ev = BookTickerEvent(
                    symbols[code], uid, bid, bid_qty, ask, ask_qty, None if ts < 0 else ts
                )
                self.bbo(ev, recv_ns)
        for bar in out.bars:
            self.bar(bar)
        if out.books is not None:
            for snap in out.books.output.snapshots:
                self.book(snap)

    def trade(self, ev: TradeEvent, recv_ns: int) -> None:
        raise NotImplementedError

    def book(self, snap: BookSnapshot) -> None:
        """A book snapshot (sessions with depth); a sink without books ignores it."""

    def bbo(self, ev: BookTickerEvent, recv_ns: int) -> None:
        raise NotImplementedError

    def bar(self, bar: BarRecord) -> None:
        raise NotImplementedError


def _telemetry_table(rows: list[tuple]) -> pa.Table:
    columns = list(zip(*rows, strict=True))
    return pa.table(
        {
            "source": pa.array(columns[0]),
            "symbol": pa.array(columns[1]),
            "component": pa.array(columns[2]),
            "session_id": pa.array(columns[3]),
            "ts": pa.array(columns[4], pa.int64()).cast(TS_MS),
            "metric": pa.array(columns[5]),
            "value": pa.array(columns[6], pa.float64()),
        }
    )


class NatsSink(EventSink):
    """Publishes normalised events to NATS (core NATS; JetStream captures them when configured).

    Payloads are exactly the v1 contracts' JSON (``Trade``, ``BookTicker``, ``Bar``): a consumer
    can ``model_validate_json`` them. They are built from the typed records with orjson (no
    pydantic per event) and buffered; ``flush`` publishes the buffer in order. NATS is a
    best-effort side channel: the warehouse and the session log are the record, so a message
    the client cannot take (outbound buffer full while NATS is down) is counted in ``dropped``,
    never allowed to stall ingestion. A bar's ``version`` is not a contract field: it travels in
    the ``Quant-Bar-Version`` header, so consumers keep the highest.
    """

    def __init__(self, url: str, max_buffer: int = 200_000) -> None:
        self.url = url
        self.nc = None
        self.published = 0
        self.dropped = 0
        self.max_buffer = max_buffer
        self._buffer: list[tuple[str, bytes, dict | None]] = []  # staged
        self._ready: list[tuple[str, bytes, dict | None]] = []  # released by the gate
        # The processor's prompt flush and the sender task (pipeline) may both flush: one at a
        # time, so a later batch never overtakes an earlier one that is still publishing.
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        import nats

        self.nc = await nats.connect(self.url, name="quant-live", max_reconnect_attempts=-1)

    def buffered(self) -> int:
        """Staged messages (not yet released by the write-ahead gate)."""
        return len(self._buffer)

    def due(self, force: bool = False) -> bool:
        return bool(self._buffer)

    def release(self) -> None:
        """Staged messages become publishable; only the write-ahead gate calls this."""
        self._ready.extend(self._buffer)
        self._buffer = []

    def _add(self, subject: str, payload: dict, headers: dict | None = None) -> None:
        if len(self._buffer) + len(self._ready) >= self.max_buffer:
            self.dropped += 1
            return
        self._buffer.append((subject, orjson.dumps(payload), headers))

    def trade(self, ev: TradeEvent, recv_ns: int) -> None:
        self._add(
            f"v1.market.trades.binance.{ev.symbol}",
            {
                "source": "binance",
                "symbol": ev.symbol,
                "trade_id": ev.trade_id,
                "price": _dec(ev.price),
                "qty": _dec(ev.qty),
                "taker_side": "sell" if ev.is_buyer_maker else "buy",
                "ts_event": _iso_ms(ev.ts_event_ms),
                "ts_init": _iso_ns(recv_ns),
                "first_trade_id": ev.first_trade_id,
                "last_trade_id": ev.last_trade_id,
            },
        )

    def bbo(self, ev: BookTickerEvent, recv_ns: int) -> None:
        self._add(
            f"v1.market.bbo.binance.{ev.symbol}",
            {
                "source": "binance",
                "symbol": ev.symbol,
                "update_id": ev.update_id,
                "bid_price": _dec(ev.bid_price),
                "bid_qty": _dec(ev.bid_qty),
                "ask_price": _dec(ev.ask_price),
                "ask_qty": _dec(ev.ask_qty),
                "ts_init": _iso_ns(recv_ns),
                "ts_event": None if ev.ts_event_ms is None else _iso_ms(ev.ts_event_ms),
            },
        )

    def bar(self, bar: BarRecord) -> None:
        self._add(
            f"v1.market.bars.binance.{bar.symbol}.1m",
            {
                "source": bar.source,
                "symbol": bar.symbol,
                "interval": bar.interval,
                "ts_event": _iso_ms(bar.open_time_ms),
                "ts_close": _iso_ms(bar.close_time_ms),
                "open": _dec(bar.open),
                "high": _dec(bar.high),
                "low": _dec(bar.low),
                "close": _dec(bar.close),
                "volume": _dec(bar.volume),
                "vwap": _dec(bar.vwap),
                "trade_count": bar.trade_count,
                "quote_volume": _dec(bar.quote_volume),
                "taker_buy_volume": _dec(bar.taker_buy_volume),
                "taker_buy_quote_volume": _dec(bar.taker_buy_quote_volume),
                "session": "continuous",
                "adjustment": "raw",
            },
            {"Quant-Bar-Version": str(bar.version)},
        )

    def book(self, snap: BookSnapshot) -> None:
        if len(self._buffer) + len(self._ready) >= self.max_buffer:
            self.dropped += 1
            return
        self._buffer.append((f"v1.market.book.binance.{snap.symbol}", snapshot_json(snap), None))

    async def flush(self) -> None:
        """Publish the released messages in order."""
        if self.nc is None or not self._ready:
            return
        from nats.errors import Error as NatsError

        async with self._lock:
            batch, self._ready = self._ready, []
            publish = self.nc.publish
            for subject, payload, headers in batch:
                try:
                    await publish(subject, payload, headers=headers)
                except NatsError as exc:  # disconnected with a full outbound buffer, or closed
                    self.dropped += 1
                    if self.dropped == 1 or self.dropped % 10_000 == 0:
                        log.warning(
                            "NATS publish failed (%s); %d messages dropped", exc, self.dropped
                        )
                    continue
                self.published += 1

    async def close(self) -> None:
        if self.nc is not None:
            await self.flush()
            await self.nc.drain()

    def stats(self) -> dict[str, int]:
        return {"published": self.published, "dropped": self.dropped}


@lru_cache(maxsize=64)
def _iso_second(second: int) -> str:
    # Consecutive events share their second: format it once (strftime costs about 1 us).
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _iso_ms(ms: int) -> str:
    """Epoch milliseconds -> the contracts' UTC ISO 8601 text, e.g. 2024-01-02T03:04:05.678Z."""
    second, milli = divmod(ms, 1000)
    return f"{_iso_second(second)}.{milli:03d}Z"


def _iso_ns(ns: int) -> str:
    second, nanos = divmod(ns, 1_000_000_000)
    return f"{_iso_second(second)}.{nanos // 1000:06d}Z"


def _dec(scaled: int | None) -> str | None:
    """Fixed-point (10**8) -> the decimal string the v1 contracts serialise."""
    if scaled is None:
        return None
    sign = "-" if scaled < 0 else ""
    whole, frac = divmod(abs(scaled), 10**8)
    text = f"{whole}.{frac:08d}".rstrip("0").rstrip(".")
    return sign + text


def snapshot_json(snap: BookSnapshot, source: str = "binance") -> bytes:
    """A kernel book snapshot as the ``BookSnapshot`` contract's JSON (``quant_core.contracts``)."""
    return orjson.dumps(
        {
            "source": source,
            "symbol": snap.symbol,
            "ts_event": _iso_ms(snap.ts_event),
            "update_id": snap.update_id,
            "synced_from": snap.synced_from,
            "bids": [
                {"price": _dec(p), "qty": _dec(q)}
                for p, q in zip(snap.bid_price, snap.bid_qty, strict=True)
            ],
            "asks": [
                {"price": _dec(p), "qty": _dec(q)}
                for p, q in zip(snap.ask_price, snap.ask_qty, strict=True)
            ],
            "bids_complete": snap.bids_known,  # see the contract's docstring
            "asks_complete": snap.asks_known,
        }
    )
