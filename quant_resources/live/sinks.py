"""Batched sinks of the live pipeline.

Every sink has two stages: rows are *staged* as the processor produces them, and only rows the
pipeline's write-ahead gate has *released* leave the process (``release`` runs right after the
session log's fsync, with no await in between; ``flush`` sends released rows only). A sink
never decides on its own to send staged rows: that is what keeps a row out of ClickHouse and
NATS until the frames it came from are durable in the session log.

ClickHouse: rows are batched per table and flushed by size or age. Each batch gets a
deterministic insert deduplication token, so a retried insert (timeout after the server had
already written it) never duplicates. While the warehouse is down, batches queue in memory in
order and are retried with backoff; nothing is dropped.

NATS: normalised events as JSON on ``v1.market.{trades,bbo,bars}.binance.{symbol}[.1m]``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import orjson
import pyarrow as pa

from quant_core.bars import BarRecord, bars_to_arrow
from quant_core.decode import BookTickerEvent, TradeEvent
from quant_core.tables import decimal_from_scaled

log = logging.getLogger(__name__)
TS_MS = pa.timestamp("ms", tz="UTC")
TS_NS = pa.timestamp("ns", tz="UTC")


def trades_table(rows: list[tuple[TradeEvent, int]], session_id: str) -> pa.Table:
    events = [r[0] for r in rows]
    n = len(rows)

    def ints(name: str) -> np.ndarray:
        return np.fromiter((getattr(e, name) for e in events), np.int64, n)

    return trade_columns_table(
        [e.symbol for e in events],
        [e.stream for e in events],
        {
            "trade_id": ints("trade_id"),
            "first_trade_id": ints("first_trade_id"),
            "last_trade_id": ints("last_trade_id"),
            "price": ints("price"),
            "qty": ints("qty"),
            "ts": ints("ts_event_ms"),
            "ts_init": np.fromiter((r[1] for r in rows), np.int64, n),
        },
        np.fromiter((e.is_buyer_maker for e in events), bool, n),
        session_id,
    )


def trade_columns_table(
    symbol: list[str],
    stream: list[str],
    ints: dict[str, np.ndarray],
    is_buyer_maker: np.ndarray,
    session_id: str,
) -> pa.Table:
    """The ``trades`` rows; ``ints`` holds trade_id, first/last_trade_id, price and qty
    (scaled by 10**8), ts (exchange ms) and ts_init (receive ns)."""
    n = len(symbol)
    return pa.table(
        {
            "source": pa.array(["binance"] * n),
            "symbol": pa.array(symbol, pa.string()),
            "stream": pa.array(stream, pa.string()),
            "trade_id": pa.array(ints["trade_id"], pa.uint64()),
            "first_trade_id": pa.array(ints["first_trade_id"], pa.uint64()),
            "last_trade_id": pa.array(ints["last_trade_id"], pa.uint64()),
            "price": decimal_from_scaled(ints["price"], 8),
            "qty": decimal_from_scaled(ints["qty"], 8),
            "is_buyer_maker": pa.array(is_buyer_maker, pa.bool_()),
            "ts": pa.array(ints["ts"], pa.int64()).cast(TS_MS),
            "ts_init": pa.array(ints["ts_init"], pa.int64()).cast(TS_NS),
            "session_id": pa.array([session_id] * n),
        }
    )


def quotes_table(rows: list[tuple[BookTickerEvent, int]], session_id: str) -> pa.Table:
    events = [r[0] for r in rows]
    n = len(rows)

    def ints(name: str) -> np.ndarray:
        return np.fromiter((getattr(e, name) for e in events), np.int64, n)

    ts = [-1 if e.ts_event_ms is None else e.ts_event_ms for e in events]
    return quote_columns_table(
        [e.symbol for e in events],
        {
            "update_id": ints("update_id"),
            "bid_price": ints("bid_price"),
            "bid_qty": ints("bid_qty"),
            "ask_price": ints("ask_price"),
            "ask_qty": ints("ask_qty"),
            "ts": np.array(ts, dtype=np.int64),
            "ts_init": np.fromiter((r[1] for r in rows), np.int64, n),
        },
        session_id,
    )


def quote_columns_table(symbol: list[str], ints: dict[str, np.ndarray], session_id: str):
    """The ``quotes`` rows; ``ints`` holds update_id, bid/ask price and qty (scaled by 10**8),
    ts (exchange ms, -1 when the event has none) and ts_init (receive ns)."""
    n = len(symbol)
    # Spot book tickers carry no exchange time: the receive time stands in for it.
    ts = np.where(ints["ts"] >= 0, ints["ts"], ints["ts_init"] // 1_000_000)
    return pa.table(
        {
            "source": pa.array(["binance"] * n),
            "symbol": pa.array(symbol, pa.string()),
            "update_id": pa.array(ints["update_id"], pa.uint64()),
            **{
                name: decimal_from_scaled(ints[name], 8)
                for name in ("bid_price", "bid_qty", "ask_price", "ask_qty")
            },
            "ts": pa.array(ts, pa.int64()).cast(TS_MS),
            "ts_init": pa.array(ints["ts_init"], pa.int64()).cast(TS_NS),
            "session_id": pa.array([session_id] * n),
        }
    )


@dataclass
class _Batch:
    table: str
    data: pa.Table
    token: str


@dataclass
class WarehouseSink:
    """Stages rows per table; ``release`` cuts them into batches (called by the pipeline's
    write-ahead gate only), ``flush`` / ``drain`` move released batches to ClickHouse."""

    warehouse: object
    session_id: str
    flush_rows: int = 5000
    flush_seconds: float = 1.0
    trades: list = field(default_factory=list)
    quotes: list = field(default_factory=list)
    # Rows the batched path built as tables already (``add_tables``).
    tables: dict[str, list[pa.Table]] = field(default_factory=lambda: {"trades": [], "quotes": []})
    # Latest version per (symbol, minute): a burst of corrections (a large repair) writes once.
    bars: dict = field(default_factory=dict)
    telemetry: list[tuple] = field(default_factory=list)
    pending: deque = field(default_factory=deque)
    rejected: list = field(default_factory=list)
    batches: int = 0
    rows_written: dict = field(default_factory=lambda: {"trades": 0, "quotes": 0, "bars_1m": 0})
    failures: int = 0
    _last_flush: float = field(default_factory=time.monotonic)
    _retry_at: float = 0.0
    _retry_delay: float = 0.5
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def buffered(self) -> int:
        chunks = sum(t.num_rows for tables in self.tables.values() for t in tables)
        return len(self.trades) + len(self.quotes) + len(self.bars) + chunks

    def add_table(self, table: str, data: pa.Table) -> None:
        """Rows already built as a table (``trades`` or ``quotes``), kept in arrival order
        with the rows appended one by one."""
        rows = self.trades if table == "trades" else self.quotes
        if rows:  # keep the order: what came one by one before this table goes first
            build = trades_table if table == "trades" else quotes_table
            self.tables[table].append(build(rows, self.session_id))
            rows.clear()
        self.tables[table].append(data)

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
        for table, rows, build in (
            ("trades", self.trades, lambda r: trades_table(r, self.session_id)),
            ("quotes", self.quotes, lambda r: quotes_table(r, self.session_id)),
            ("bars_1m", self.bars, lambda r: bars_to_arrow(list(r.values()))),
            ("telemetry", self.telemetry, _telemetry_table),
        ):
            chunks = self.tables.get(table, [])
            if rows:
                chunks.append(build(rows if isinstance(rows, dict) else list(rows)))
                rows.clear()
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
        while self.pending:
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


class NatsSink:
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

    async def connect(self) -> None:
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

    async def flush(self) -> None:
        """Publish the released messages in order."""
        if self.nc is None or not self._ready:
            return
        from nats.errors import Error as NatsError

        batch, self._ready = self._ready, []
        publish = self.nc.publish
        for subject, payload, headers in batch:
            try:
                await publish(subject, payload, headers=headers)
            except NatsError as exc:  # disconnected with a full outbound buffer, or closed
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 10_000 == 0:
                    log.warning("NATS publish failed (%s); %d messages dropped", exc, self.dropped)
                continue
            self.published += 1

    async def close(self) -> None:
        if self.nc is not None:
            await self.flush()
            await self.nc.drain()


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
