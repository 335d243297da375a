"""Deterministic replay of a session log: the replay driver of the ingest kernel.

The records are read through the verifying reader (a broken chain stops the replay with a
``SessionLogError``), re-emitted in recorded order on a virtual clock (the recorded receive
times), and fed to an ``IngestKernel`` (``quant_core.kernel``), the object the live job feeds
the same records to: decoding, de-duplication, gap holding and bars are its, not copies. The
output depends on the log's bytes only (no wall clock, no environment), so the same session
gives the same trades, bars and digest on any machine. A long session is sharded: worker
processes verify and decode segments, this process applies them to the kernel in order.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from quant_core.bars import BARS_1M_VERSIONED, BarRecord, bars_to_arrow
from quant_core.book_session import has_depth
from quant_core.book_tables import BOOK_UPDATES, book_snapshots_table, book_updates_table
from quant_core.decode import BatchDecoder, FrameBatch, Normalizer, TradeColumns
from quant_core.depth_sync import BookSnapshot
from quant_core.kernel import IngestKernel, KernelOutput
from quant_core.sessionlog.format import FORMAT_VERSION, RecordKind
from quant_core.sessionlog.reader import (
    SessionInfo,
    SessionLogError,
    SessionReader,
    join_segments,
    read_header,
    unverified_records,
)
from quant_core.tables import PRICE, TS, decimal_from_scaled

INTERVAL_MS = 60_000
REPLAY_BATCH = 4096  # frames per batch: large enough to amortise, small enough for the cache
PARALLEL_BYTES = 16 << 20  # below this, starting a verifier process costs more than it saves

TRADES_SCHEMA = pa.schema(
    [
        ("symbol", pa.string()),
        ("trade_id", pa.int64()),
        ("first_trade_id", pa.int64()),
        ("last_trade_id", pa.int64()),
        ("price", PRICE),
        ("qty", PRICE),
        ("ts_event", TS),
        ("is_buyer_maker", pa.bool_()),
    ]
)
# Compared between bar tables; ``version`` is left out: it counts deliveries, not content.
BAR_VALUE_COLUMNS = [f.name for f in BARS_1M_VERSIONED if f.name != "version"]


class _TradeColumns:
    """Accepted trades in typed arrays: 8 bytes a value instead of a Python int object each,
    and the symbol as a code of the kernel's table (a string per trade costs more)."""

    def __init__(self, symbols: list[str]) -> None:
        self.symbols = symbols
        self.code = array("i")
        self.trade_id = array("q")
        self.first = array("q")
        self.last = array("q")
        self.price = array("q")
        self.qty = array("q")
        self.ts = array("q")
        self.maker = array("b")

    def extend(self, t: TradeColumns) -> None:
        """Columns whose codes index ``symbols``."""
        self.code.frombytes(t.code.astype(np.int32).tobytes())
        for column, values in (
            (self.trade_id, t.trade_id),
            (self.first, t.first),
            (self.last, t.last),
            (self.price, t.price),
            (self.qty, t.qty),
            (self.ts, t.ts),
        ):
            column.frombytes(values.astype(np.int64).tobytes())
        self.maker.frombytes(t.maker.astype(np.int8).tobytes())

    def table(self) -> pa.Table:
        names = pa.array(self.symbols, pa.string())
        return pa.table(
            [
                names.take(pa.array(self.code, pa.int32())),
                pa.array(self.trade_id, pa.int64()),
                pa.array(self.first, pa.int64()),
                pa.array(self.last, pa.int64()),
                decimal_from_scaled(self.price, 8),
                decimal_from_scaled(self.qty, 8),
                pa.array(self.ts, pa.int64()).cast(TS),
                pa.array(self.maker, pa.int8()).cast(pa.bool_()),
            ],
            schema=TRADES_SCHEMA,
        )


class ReplayDriver:
    """Feeds session-log records to an ``IngestKernel`` (the live job's processing, not a copy
    of it) and keeps what it emits: every trade, the latest version of every bar, every book
    snapshot, and every output in order when ``keep_outputs`` (tests compare them with live's).

    Call ``on_ws`` / ``on_ws_many`` / ``on_rest`` / ``on_conn`` in log order, then ``finish``.
    """

    def __init__(
        self,
        symbols: Iterable[str] = (),
        lateness_ms: int = 2000,
        source: str = "binance",
        streams: Iterable[str] = ("aggTrade",),
        keep_outputs: bool = False,
    ) -> None:
        symbols = tuple(symbols)
        self.kernel = IngestKernel(symbols, streams, lateness_ms, source)
        self.decoder = self.kernel.decoder
        self.normalizer = self.kernel.normalizer
        self.aggregator = self.kernel.aggregator
        self.counts = self.kernel.counts
        self.trades = _TradeColumns(self.kernel.symbols)
        self.bars: dict[tuple[str, int], BarRecord] = {}
        self.outputs: list[KernelOutput] | None = [] if keep_outputs else None
        self.source = source
        self.book_snapshots: list[BookSnapshot] = []
        self.book_updates: list[pa.Table] = []

    def on_ws(self, payload: bytes, recv_ns: int = 0) -> None:
        self.on_ws_many([payload], [recv_ns])

    def on_ws_many(self, payloads: list[bytes], recv_ns: list[int] | None = None) -> None:
        """Consecutive frames; ``recv_ns`` their recorded receive times (the books' ``ts_init``;
        None: zeros)."""
        recv = None if recv_ns is None else np.array(recv_ns, dtype=np.int64)
        self._keep(self.kernel.frames(payloads, recv))

    def on_decoded(self, batch: FrameBatch) -> None:
        """Consecutive frames decoded with the kernel's symbol codes."""
        self._keep(self.kernel.decoded(batch))

    def on_rest(self, payload: bytes, meta: dict[str, Any], recv_ns: int = 0) -> None:
        path, symbol = meta.get("path"), meta.get("symbol")
        if not isinstance(path, str) or not isinstance(symbol, str):
            path = ""  # not an answer the kernel can attribute: counted as rest_other
        params = meta.get("params")
        params = params if isinstance(params, dict) else None
        request_id = meta.get("request_id")
        request_id = request_id if isinstance(request_id, int) else None
        self._keep(
            self.kernel.rest(
                path, payload, symbol or "", recv_ns, params=params, request_id=request_id
            )
        )

    def on_conn(self, meta: dict[str, Any], recv_ns: int = 0) -> None:
        self._keep(self.kernel.conn(meta, recv_ns))

    @property
    def first_exchange_ms(self) -> int | None:
        return self.kernel.first_exchange_ms

    @property
    def last_exchange_ms(self) -> int | None:
        return self.kernel.last_exchange_ms

    def _keep(self, out: KernelOutput) -> None:
        if self.outputs is not None:
            self.outputs.append(out)
        if len(out.trades):
            self.trades.extend(out.trades)
        for rec in out.bars:  # a later version replaces the earlier one
            self.bars[(rec.symbol, rec.open_time_ms)] = rec
        if out.books is not None:
            books = out.books.output
            self.book_snapshots.extend(books.snapshots)
            if len(books.updates["price"]):
                self.book_updates.append(
                    book_updates_table(books.symbols, books.updates, out.books.ts_init, self.source)
                )

    def book_table(self) -> pa.Table | None:
        """The ``book_snapshots`` rows, or None when the session subscribed no depth."""
        if self.kernel.books is None:
            return None
        return book_snapshots_table(self.book_snapshots, self.source)

    def book_updates_table(self) -> pa.Table | None:
        """The ``book_updates`` rows in the order applied (``ts_init`` the recorded receive
        times), or None when the session subscribed no depth."""
        if self.kernel.books is None:
            return None
        return pa.concat_tables([BOOK_UPDATES.empty_table(), *self.book_updates])

    def finish(self, stop_exchange_ms: int | None) -> pa.Table:
        """Bars whose minute ended by ``stop_exchange_ms`` (the clean stop), final versions,
        sorted by symbol and time. Without a stop time (a recovered crash) only the bars the
        watermark finalised are returned."""
        if stop_exchange_ms is not None:
            self._keep(self.kernel.flush(stop_exchange_ms))
            kept = [
                r for r in self.bars.values() if r.open_time_ms + INTERVAL_MS <= stop_exchange_ms
            ]
        else:
            kept = list(self.bars.values())
        kept.sort(key=lambda r: (r.symbol, r.open_time_ms))
        return bars_to_arrow(kept)


@dataclass
class Pacer:
    """Virtual clock: ``speed`` None replays as fast as possible, else at ``speed`` x the
    recorded pace. ``sleep``/``clock`` are injectable so tests never sleep."""

    speed: float | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    slept: float = 0.0
    _start: tuple[float, int] | None = None

    def __post_init__(self) -> None:
        if self.speed is not None and self.speed <= 0:
            raise ValueError(f"speed={self.speed} must be > 0 (or None: as fast as possible)")

    def wait(self, recv_ns: int) -> None:
        if self.speed is None:
            return
        if self._start is None:
            self._start = (self.clock(), recv_ns)
            return
        t0, v0 = self._start
        delay = t0 + (recv_ns - v0) / 1e9 / self.speed - self.clock()
        if delay > 0:
            self.slept += delay
            self.sleep(delay)


@dataclass
class ReplayResult:
    trades: pa.Table
    bars: pa.Table
    summary: dict[str, Any]  # deterministic: same session -> same summary
    timing: dict[str, float]  # wall-clock figures, differ between runs
    info: SessionInfo
    rejects: dict[str, int]
    book_snapshots: pa.Table | None = None  # None when the session subscribed no depth
    book_updates: pa.Table | None = None  # likewise


def replay(
    session: Path | str,
    *,
    speed: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    lateness_ms: int = 2000,
    source: str = "binance",
    parallel: bool | None = None,
) -> ReplayResult:
    """Replay a closed session (directory or single segment file); see the module docstring.

    ``parallel`` (default: for sessions of ``PARALLEL_BYTES`` or more, replayed as fast as
    possible) spreads the work over processes. A session of several segments is sharded: one
    worker per core verifies and decodes whole segments, this process applies them in order.
    A single segment is verified in a second process while this one decodes its records
    unverified. Either way the result is returned only if every check passed, else the
    ``SessionLogError`` of the serial pass: it is the serial result, sooner."""
    started = time.perf_counter()
    reader = SessionReader(session)
    pacer = Pacer(speed, sleep, clock)
    if parallel is None:
        parallel = speed is None and sum(f.stat().st_size for f in reader.files) >= PARALLEL_BYTES
    if parallel and speed is not None:
        raise ValueError("a paced replay verifies as it goes: parallel=True needs speed=None")
    sharded = parallel and len(reader.files) > 1
    if sharded and has_depth(read_header(reader.files[0]).streams):
        sharded = False  # shards decode trades only; depth frames go to the books in order
    if sharded:
        pipeline, records, info = _replay_sharded(reader, lateness_ms, source)
    elif parallel:
        pipeline, records, info = _replay_parallel(reader, lateness_ms, source)
    else:
        pipeline, records = _replay_serial(reader, pacer, lateness_ms, source)
        info = reader.info
    footer = info.footer
    stop = footer.stop_exchange_ms if footer is not None else None
    bars = pipeline.finish(stop)
    trades = pipeline.trades.table()
    seconds = time.perf_counter() - started
    agg = pipeline.aggregator
    summary = {
        "format_version": FORMAT_VERSION,
        "session_id": info.header.session_id,
        "venue": info.header.venue,
        "segments": len(info.segments),
        "records": dict(sorted(info.counts.items())),
        "events": {
            **pipeline.counts,
            "dropped_late": agg.dropped_late,
            "aggregator_duplicates": agg.duplicates,
        },
        "first_recv_ns": info.first_recv_ns,
        "last_recv_ns": info.last_recv_ns,
        "span_s": (
            (info.last_recv_ns - info.first_recv_ns) / 1e9 if info.first_recv_ns is not None else 0
        ),
        "first_exchange_ms": pipeline.first_exchange_ms,
        "last_exchange_ms": pipeline.last_exchange_ms,
        "stop_exchange_ms": stop,
        "clean": footer.clean if footer is not None else None,
        "final_digest": info.final_digest,
        "trades": trades.num_rows,
        "bars": bars.num_rows,
    }
    timing = {
        "seconds": seconds,
        "events_per_s": records / seconds if seconds > 0 else 0.0,
        "slept_s": pacer.slept,
    }
    books = pipeline.kernel.books
    if books is not None:
        summary["books"] = dict(books.counts)
    return ReplayResult(
        trades,
        bars,
        summary,
        timing,
        info,
        dict(pipeline.normalizer.rejects),
        pipeline.book_table(),
        pipeline.book_updates_table(),
    )


def _replay_serial(
    reader: SessionReader, pacer: Pacer, lateness_ms: int, source: str
) -> tuple[ReplayDriver, int]:
    pipeline: ReplayDriver | None = None
    records = 0
    if pacer.speed is None:
        times = _books_in(reader.files)
        for item in reader.batches(REPLAY_BATCH, times):
            if pipeline is None:  # the header is known (verified) once a record was read
                pipeline = _pipeline_for(reader.info.header, lateness_ms, source)
            records += _feed(pipeline, *item)
    else:
        for rec in reader.records():
            if pipeline is None:
                pipeline = _pipeline_for(reader.info.header, lateness_ms, source)
            pacer.wait(rec.recv_ns)
            records += 1
            if rec.kind == RecordKind.WS:
                pipeline.on_ws(rec.payload, rec.recv_ns)
            else:
                _feed(pipeline, rec.kind, rec.meta, [rec.payload], [rec.recv_ns])
    if pipeline is None:
        pipeline = _pipeline_for(reader.info.header, lateness_ms, source)
    return pipeline, records


def _feed(
    pipeline: ReplayDriver,
    kind: int,
    meta: bytes,
    payloads: list[bytes],
    recv_ns: list[int] | None = None,
) -> int:
    """One item of ``SessionReader.batches`` / ``unverified_records`` (``recv_ns``: the
    receive times, read for sessions with books); returns its records."""
    if kind == RecordKind.WS:
        pipeline.on_ws_many(payloads, recv_ns)
    elif kind == RecordKind.REST:
        pipeline.on_rest(payloads[0], orjson.loads(meta) if meta else {}, _first(recv_ns))
    else:
        pipeline.on_conn(orjson.loads(meta) if meta else {}, _first(recv_ns))
    return len(payloads)


def _first(recv_ns: list[int] | None) -> int:
    return recv_ns[0] if recv_ns else 0


def _books_in(files: list[Path]) -> bool:
    """Whether the session subscribed depth: its book rows carry the recorded receive times
    (``book_updates.ts_init``), so its records are read with them."""
    try:
        return has_depth(read_header(files[0]).streams)
    except Exception:  # the verifying read names what is wrong with the header
        return False


def _replay_parallel(
    reader: SessionReader, lateness_ms: int, source: str
) -> tuple[ReplayDriver, int, SessionInfo]:
    context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        verified = pool.submit(_verify, str(reader.path))
        try:
            header = read_header(reader.files[0])
        except Exception:
            verified.result()  # the verifier names what is wrong with it
            raise
        pipeline = _pipeline_for(header, lateness_ms, source)
        records = 0
        times = has_depth(header.streams)
        for item in unverified_records(reader.files, REPLAY_BATCH, times=times):
            records += _feed(pipeline, *item)
        info = verified.result()  # raises the verifier's SessionLogError
    _check_count(reader, records, info)
    return pipeline, records, info


def _verify(path: str) -> SessionInfo:
    return SessionReader(path).verify()


@dataclass
class _Shard:
    """One segment, verified alone and decoded: the ws frames as decoded batches (symbol
    codes of ``symbols``), rest and conn records as (kind, meta, payload), in record order."""

    info: SessionInfo
    items: list[FrameBatch | tuple[int, bytes, list[bytes]]]
    symbols: list[str]
    normalizer: Normalizer


def _shard(path: str, symbols: tuple[str, ...]) -> _Shard:
    reader = SessionReader(path)  # a lone segment: its chain from its header's claims
    decoder = _decoder_for(symbols)  # configured as the parent's, whose rejects it joins
    ws = int(RecordKind.WS)
    items = [
        decoder.decode(payloads) if kind == ws else (kind, meta, payloads)
        for kind, meta, payloads in reader.batches(REPLAY_BATCH)
    ]
    return _Shard(reader.info, items, decoder.symbols, decoder.normalizer)


def _replay_sharded(
    reader: SessionReader, lateness_ms: int, source: str
) -> tuple[ReplayDriver, int, SessionInfo]:
    """One worker process per core verifies and decodes whole segments (each segment's header
    states where its chain starts); this process applies them in order (trade de-duplication
    and bars are sequential) and checks that the segments link (``join_segments``)."""
    files = reader.files
    try:
        header = read_header(files[0])
    except Exception:
        reader.verify()  # names what is wrong with it
        raise
    pipeline = _pipeline_for(header, lateness_ms, source)
    workers = max(1, min(len(files), len(os.sched_getaffinity(0))))
    context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
    parts: list[SessionInfo] = []
    records = 0
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        todo = iter(files)
        # At most one decoded segment waits beyond the ones being worked on: bounded memory.
        running = deque(
            pool.submit(_shard, str(f), header.symbols) for f in islice(todo, workers + 1)
        )
        while running:
            try:
                shard = running.popleft().result()
            except SessionLogError:
                pool.shutdown(cancel_futures=True)
                SessionReader(reader.path).verify()  # the serial pass's error, for the session
                raise
            running.extend(pool.submit(_shard, str(f), header.symbols) for f in islice(todo, 1))
            parts.append(shard.info)
            codes = np.array([pipeline.decoder.code(s) for s in shard.symbols], dtype=np.int32)
            pipeline.normalizer.merge(shard.normalizer)
            for item in shard.items:
                if isinstance(item, FrameBatch):
                    records += len(item.trades) + len(item.books) + len(item.others)
                    pipeline.on_decoded(item.recode(codes))
                else:
                    records += _feed(pipeline, *item)
    info = join_segments(reader.path, parts)
    _check_count(reader, records, info)
    return pipeline, records, info


def _check_count(reader: SessionReader, records: int, info: SessionInfo) -> None:
    data = sum(info.counts[k] for k in ("ws", "rest", "conn"))
    if records != data:
        raise SessionLogError(reader.path, f"replay read {records} records of the {data} verified")


def _decoder_for(symbols: Iterable[str]) -> BatchDecoder:
    """A worker's decoder, configured as the kernel's (``IngestKernel`` builds its own so)."""
    return BatchDecoder(Normalizer(symbols=set(symbols) or None))


def _pipeline_for(header, lateness_ms: int, source: str) -> ReplayDriver:
    return ReplayDriver(tuple(header.symbols), lateness_ms, source, header.streams)


def compare_bars(expected: pa.Table, actual: pa.Table) -> str | None:
    """The first differing bar as a sentence, or None when the tables hold the same bars.

    Bars are matched on (source, symbol, ts); every ``BARS_1M`` column is compared except
    ``version`` (how many times a bar was delivered is not part of its content).
    """
    exp = _bar_rows(expected)
    act = _bar_rows(actual)
    for key in sorted(exp.keys() | act.keys()):
        source, symbol, ts = key
        name = f"bar {symbol} {ts.isoformat()} (source {source})"
        if key not in act:
            return f"{name} is expected but missing"
        if key not in exp:
            return f"{name} is not expected"
        e, a = exp[key], act[key]
        for col in BAR_VALUE_COLUMNS:
            if e.get(col) != a.get(col):
                return f"{name}: {col} is {a.get(col)!r}, expected {e.get(col)!r}"
    return None


def _bar_rows(table: pa.Table) -> dict[tuple, dict[str, Any]]:
    missing = [c for c in BAR_VALUE_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"bars table lacks columns {missing}")
    rows: dict[tuple, dict[str, Any]] = {}
    for row in table.select(BAR_VALUE_COLUMNS).to_pylist():
        key = (row["source"], row["symbol"], row["ts"])
        if key in rows:
            raise ValueError(f"bars table has bar {key[1]} {key[2]} twice")
        rows[key] = row
    return rows
