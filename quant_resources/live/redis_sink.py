"""The live pipeline's latest-values cache in Redis: one more sink behind the write-ahead gate.

Per series it keeps the newest trade, book ticker, final 1m bar and (with depth) book snapshot
at ``quant:v1:latest:{source}:{symbol}:{kind}`` (``quant_resources.latest_store``, which the data
service reads), as v1 contract JSON, and appends every final bar version to a capped Redis
Stream ``quant:v1:stream:{source}:bar:1m`` for consumers that follow without NATS.

Same protocol as the other sinks (``quant_resources.live.sinks``): rows are *staged* as the
processor produces them, ``release`` (called by the pipeline's gate right after the session
log's fsync, nothing else) makes them sendable, ``flush`` sends released rows only.

"Newest" is the warehouse's order, so Redis and the ClickHouse fallback of ``/v1/latest`` agree:
trades by (ts, trade_id), book tickers by (ts, update_id), bars by (open time, version). A
repaired trade older than the cached one never replaces it. The values are built from the same
Arrow rows the warehouse gets, through the contract models.

Cost on the live path: staging keeps a reference to the burst's table (or, one by one, the
newest event per symbol); each flush reduces what was released to the newest value per key
and sends it in ONE pipelined round trip from a background task, so the processor never
waits for Redis. An outage is counted (``failures``), logged once when it starts and once when
it ends, and retried with backoff (0.5 s doubling to 15 s); meanwhile only the newest value per
key is kept (bounded by the number of series) and stream entries up to the stream's cap (the
oldest beyond it are counted in ``stream_dropped``), so Redis catches up on return.

TTL policy: every latest-value key is written with a TTL (``LATEST_TTL_S``, one day, renewed on
each write). A series nobody ingests any more expires, and ``/v1/latest`` then reads the same
value from the warehouse; nothing is lost. Streams have no TTL; they are capped at about
``STREAM_MAXLEN`` entries (approximate trimming, ``XADD MAXLEN ~``).

Stream entries carry explicit ids (``{ms}-{seq}``, increasing within the process), so a write
retried after Redis applied part of it does not add an entry twice: Redis refuses an id at or
below the stream's top, and that refusal counts as "already there".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quant_core.bars import BarRecord, bars_to_arrow
from quant_core.contracts import Bar, BookTicker, Trade
from quant_core.contracts import BookSnapshot as BookSnapshotContract
from quant_core.depth_sync import BookSnapshot
from quant_core.kernel import KernelOutput
from quant_resources.latest_store import bars_stream_key, latest_key
from quant_resources.live.sinks import output_tables, snapshot_json
from quant_resources.settings import redact_url

log = logging.getLogger(__name__)
LATEST_TTL_S = 86_400
STREAM_MAXLEN = 100_000
SOCKET_TIMEOUT_S = 2.0
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 15.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Timestamp unit -> (multiplier, divisor) to microseconds (floor: ns are truncated).
TO_US = {"s": (1_000_000, 1), "ms": (1_000, 1), "us": (1, 1), "ns": (1, 1_000)}
# (table column of the time, column of the id that orders events of the same time)
ORDER = {"trade": ("ts", "trade_id"), "book_ticker": ("ts", "update_id"), "bar": ("ts", "version")}


def trade_contract(row: dict) -> Trade:
    """A ``trades`` table row -> the v1 ``Trade`` (what ``/v1/latest`` builds from ClickHouse)."""
    return Trade.model_validate(
        {
            "source": row["source"],
            "symbol": row["symbol"],
            "trade_id": row["trade_id"],
            "price": row["price"],
            "qty": row["qty"],
            "taker_side": "sell" if row["is_buyer_maker"] else "buy",
            "ts_event": row["ts"],
            "ts_init": row["ts_init"],
            "first_trade_id": row["first_trade_id"],
            "last_trade_id": row["last_trade_id"],
        }
    )


def book_ticker_contract(row: dict) -> BookTicker:
    """A ``quotes`` table row -> the v1 ``BookTicker``."""
    return BookTicker.model_validate(
        {
            "source": row["source"],
            "symbol": row["symbol"],
            "update_id": row["update_id"],
            "bid_price": row["bid_price"],
            "bid_qty": row["bid_qty"],
            "ask_price": row["ask_price"],
            "ask_qty": row["ask_qty"],
            "ts_init": row["ts_init"],
            "ts_event": row["ts"],
        }
    )


def bar_contract(row: dict) -> Bar:
    """A ``bars_1m`` table row -> the v1 ``Bar`` (a zero vwap and an empty session are absent,
    as in the warehouse query of the data service)."""
    return Bar.model_validate(
        {
            "source": row["source"],
            "symbol": row["symbol"],
            "interval": row["interval"],
            "ts_event": row["ts"],
            "ts_close": row["ts_close"],
            **{k: row[k] for k in ("open", "high", "low", "close", "volume", "trade_count")},
            "vwap": row["vwap"] or None,
            "quote_volume": row["quote_volume"],
            "taker_buy_volume": row["taker_buy_volume"],
            "taker_buy_quote_volume": row["taker_buy_quote_volume"],
            "session": row["session"] or None,
            "adjustment": row["adjustment"],
        }
    )


def book_contract(snap: BookSnapshot, source: str) -> BookSnapshotContract:
    """A kernel book snapshot -> the v1 ``BookSnapshot`` ``/v1/latest`` serves as ``book``: the
    JSON the NATS sink publishes (``sinks.snapshot_json``), so Redis, NATS and the
    ``book_snapshots`` row agree, completeness flags (``bids_complete``/``asks_complete``)
    included."""
    return BookSnapshotContract.model_validate_json(snapshot_json(snap, source))


CONTRACTS = {"trade": trade_contract, "book_ticker": book_ticker_contract, "bar": bar_contract}


def newest_rows(table: pa.Table, kind: str) -> list[tuple[tuple[int, int], dict]]:
    """Per symbol, the newest row of ``table`` in the warehouse's order for ``kind``, with its
    sort key; timestamps at microseconds (the contracts' resolution, as the API's query)."""
    if not table.num_rows:
        return []
    ts_name, id_name = ORDER[kind]
    ts = pc.cast(table.column(ts_name), pa.int64()).to_numpy()
    ids = table.column(id_name).to_numpy().astype(np.int64)
    symbols = pc.dictionary_encode(table.column("symbol")).combine_chunks()
    codes = symbols.indices.to_numpy()
    order = np.lexsort((ids, ts))[::-1]  # newest first
    _, first = np.unique(codes[order], return_index=True)
    rows = order[first]
    picked = python_rows(table.take(pa.array(rows)))
    return [((int(ts[i]), int(ids[i])), row) for i, row in zip(rows.tolist(), picked, strict=True)]


def python_rows(table: pa.Table) -> list[dict]:
    """Rows as dicts, timestamps as UTC datetimes at microseconds: ns receive times are
    truncated, like the API's ``toDateTime64(ts_init, 6)``. (Built from the integers: Arrow's
    own conversion of tz-aware timestamps costs about 20 us a value.)"""
    columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_timestamp(column.type):
            mul, div = TO_US[column.type.unit]
            ticks = pc.cast(column, pa.int64()).to_pylist()
            columns[name] = [EPOCH + timedelta(microseconds=t * mul // div) for t in ticks]
        else:
            columns[name] = column.to_pylist()
    rows = zip(*columns.values(), strict=True)
    return [dict(zip(columns, values, strict=True)) for values in rows]


@dataclass
class _Staged:
    tables: dict[str, list[pa.Table]] = field(
        default_factory=lambda: {"trade": [], "book_ticker": []}
    )
    # Every version a burst produced, newest per (symbol, minute): the stream wants them all.
    bars: dict[tuple[str, int], BarRecord] = field(default_factory=dict)
    books: dict[str, tuple[tuple[int, int], bytes]] = field(default_factory=dict)

    def __len__(self) -> int:
        tables = sum(len(t) for t in self.tables.values())
        return tables + len(self.bars) + len(self.books)


@dataclass
class _Entry:
    seq: int
    stream: str
    id: str
    fields: dict[str, bytes | str]


class RedisSink:
    """Latest values and the stream of final bars in Redis (module docstring)."""

    def __init__(
        self,
        url: str,
        source: str = "binance",
        ttl_s: int = LATEST_TTL_S,
        stream_maxlen: int = STREAM_MAXLEN,
    ) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.display_url = redact_url(url)
        self.source = source
        self.ttl_s = ttl_s
        self.stream_maxlen = stream_maxlen
        # No retries inside the client: this sink's own backoff decides when to try again.
        self.client = aioredis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        self._staged = _Staged()
        self._released: list[_Staged] = []
        self.pending: dict[str, bytes] = {}  # key -> newest contract JSON not yet in Redis
        self._best: dict[str, tuple[int, int]] = {}  # key -> sort key of the newest value seen
        self._written: dict[str, bytes] = {}  # key -> the value Redis acknowledged last
        self.entries: deque[_Entry] = deque()  # stream entries not yet in Redis
        self._seq = 0
        self._last_id = (0, -1)
        self._task: asyncio.Task | None = None
        self._retry_at = 0.0
        self._retry_delay = RETRY_FIRST_S
        self.down_since: float | None = None
        self.written = 0  # latest-value writes (one per key per flush)
        self.stream_written = 0
        self.stream_dropped = 0  # entries beyond the cap while Redis was down
        self.failures = 0
        self.outages = 0

    # -- staging (the processor) ---------------------------------------------------------------
    prompt = False  # released on the warehouse's schedule (Sink protocol)

    async def start(self) -> None:
        return None  # connects lazily: an unreachable Redis must not stop the live job

    def stage(self, out: KernelOutput) -> None:
        """The kernel's output, from the same rows the warehouse gets."""
        tables = output_tables(out, "")
        if "trades" in tables:
            self.trade_table(tables["trades"])
        if "quotes" in tables:
            self.quote_table(tables["quotes"])
        if out.bars:
            self.bars(out.bars)
        if out.books is not None:
            for snap in out.books.output.snapshots:
                self.book(snap)

    def trade_table(self, table: pa.Table) -> None:
        """A burst's ``trades`` rows, as the warehouse gets them."""
        self._staged.tables["trade"].append(table)

    def quote_table(self, table: pa.Table) -> None:
        """A burst's ``quotes`` rows, as the warehouse gets them."""
        self._staged.tables["book_ticker"].append(table)

    def bars(self, bars: Iterable[BarRecord]) -> None:
        for bar in bars:
            self._staged.bars[(bar.symbol, bar.open_time_ms)] = bar

    def book(self, snap: BookSnapshot) -> None:
        """The newest book snapshot of a series: kept when it is the newest by (exchange time,
        update id), stored under kind ``book`` as the v1 ``BookSnapshot`` contract's JSON."""
        order = (snap.ts_event, snap.update_id)
        held = self._staged.books.get(snap.symbol)
        if held is None or order >= held[0]:
            self._staged.books[snap.symbol] = (order, snapshot_json(snap, self.source))

    # -- the sink protocol ---------------------------------------------------------------------
    def buffered(self) -> int:
        """Staged items (not yet released by the write-ahead gate)."""
        return len(self._staged)

    def due(self, force: bool = False) -> bool:
        return bool(len(self._staged))

    def release(self) -> None:
        """Staged items become sendable; only the write-ahead gate calls this."""
        if len(self._staged):
            self._released.append(self._staged)
            self._staged = _Staged()

    async def flush(self) -> None:
        """Reduce what was released to the newest value per key and send it from a background
        task: never waits for Redis (one write in flight at a time)."""
        self._reduce()
        if self._task is not None and not self._task.done():
            return
        if (self.pending or self.entries) and time.monotonic() >= self._retry_at:
            self._task = asyncio.get_running_loop().create_task(self._write(), name="redis-sink")

    async def close(self, timeout_s: float = 5.0) -> bool:
        """Send everything released, retrying through an outage for up to ``timeout_s``;
        True when Redis holds it all. Never raises: Redis is a cache, not the record."""
        deadline = time.monotonic() + timeout_s
        self._reduce()
        while True:
            if self._task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(self._task), deadline - time.monotonic())
            if not (self.pending or self.entries) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(max(0.0, min(self._retry_at - time.monotonic(), 0.5)))
            self._retry_at = 0.0
            self._task = asyncio.get_running_loop().create_task(self._write(), name="redis-sink")
        done = not (self.pending or self.entries)
        if not done:
            log.warning(
                "redis at %s: %d latest values and %d stream entries not written at the stop",
                self.display_url,
                len(self.pending),
                len(self.entries),
            )
        if self._task is not None and not self._task.done():
            self._task.cancel()
        with contextlib.suppress(Exception):
            await self.client.aclose()
        return done

    def stats(self) -> dict[str, int]:
        return self.counts()

    def counts(self) -> dict[str, int]:
        """For the run's summary."""
        return {
            "written": self.written,
            "stream_written": self.stream_written,
            "stream_dropped": self.stream_dropped,
            "failures": self.failures,
            "outages": self.outages,
            "pending": len(self.pending) + len(self.entries),
        }

    # -- internals -----------------------------------------------------------------------------
    def _reduce(self) -> None:
        released, self._released = self._released, []
        for staged in released:
            tables = dict(staged.tables)
            if staged.bars:
                bars = list(staged.bars.values())
                tables["bar"] = [bars_to_arrow(bars)]
                self._stream(bars, tables["bar"][0])
            for kind, chunks in tables.items():
                if chunks:
                    data = pa.concat_tables(chunks) if len(chunks) > 1 else chunks[0]
                    for order, row in newest_rows(data, kind):
                        self._offer(kind, row["symbol"], order, row)
            for symbol, (order, payload) in staged.books.items():
                self._offer("book", symbol, order, payload)

    def _offer(self, kind: str, symbol: str, order: tuple[int, int], value) -> None:
        key = latest_key(self.source, symbol, kind)
        best = self._best.get(key)
        if best is not None and order < best:
            return  # older than what is cached (a repaired trade, a correction of an old bar)
        self._best[key] = order
        if not isinstance(value, bytes):
            value = CONTRACTS[kind](value).model_dump_json().encode()
        self.pending[key] = value

    def _stream(self, bars: list[BarRecord], table: pa.Table) -> None:
        for bar, row in zip(bars, python_rows(table), strict=True):
            now_ms = time.time_ns() // 1_000_000
            ms, seq = self._last_id
            self._last_id = (now_ms, 0) if now_ms > ms else (ms, seq + 1)
            self._seq += 1
            self.entries.append(
                _Entry(
                    self._seq,
                    bars_stream_key(bar.source, bar.interval),
                    f"{self._last_id[0]}-{self._last_id[1]}",
                    {
                        "symbol": bar.symbol,
                        "version": str(bar.version),
                        "bar": bar_contract(row).model_dump_json(),
                    },
                )
            )
        overflow = len(self.entries) - self.stream_maxlen
        for _ in range(max(0, overflow)):
            self.entries.popleft()
            self.stream_dropped += 1

    async def _write(self) -> None:
        import redis

        values = dict(self.pending)
        if self.down_since is not None:
            # Redis may come back empty (a restart without persistence): every series' newest
            # value goes again, not only the ones that changed during the outage.
            values = {**self._written, **values}
        entries = list(self.entries)
        pipe = self.client.pipeline(transaction=False)
        for key, value in values.items():
            pipe.set(key, value, ex=self.ttl_s)
        for entry in entries:
            pipe.xadd(
                entry.stream,
                entry.fields,
                id=entry.id,
                maxlen=self.stream_maxlen,
                approximate=True,
            )
        try:
            results = await pipe.execute(raise_on_error=False)
            errors = [
                r for r in results if isinstance(r, Exception) and "equal or smaller" not in str(r)
            ]
            if errors:
                raise errors[0]
        except (redis.RedisError, OSError) as exc:
            self.failures += 1
            self._retry_at = time.monotonic() + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_S)
            if self.down_since is None:
                self.down_since = time.monotonic()
                self.outages += 1
                log.warning(
                    "redis at %s unavailable (%s: %s); the live path goes on, latest values "
                    "are kept and written when it answers",
                    self.display_url,
                    type(exc).__name__,
                    exc,
                )
            return
        for key, value in values.items():
            if self.pending.get(key) is value:  # not replaced by a newer value meanwhile
                del self.pending[key]
        self._written.update(values)
        if entries:
            last = entries[-1].seq
            while self.entries and self.entries[0].seq <= last:
                self.entries.popleft()
        self.written += len(values)
        self.stream_written += len(entries)
        self._retry_delay = RETRY_FIRST_S
        if self.down_since is not None:
            log.warning(
                "redis at %s answers again after %.1f s (%d failed writes); caught up",
                self.display_url,
                time.monotonic() - self.down_since,
                self.failures,
            )
            self.down_since = None
