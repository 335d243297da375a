"""The ingest kernel: raw records in log order -> trades, quotes, bars, gaps and rejects.

Live and replay are two drivers of this one object (``quant_resources.live.pipeline`` with its
sockets, queue, repair scheduling and write-ahead gate; ``quant_core.replay`` with a session
log, a virtual clock and sharding over processes). Both call, in the order the session log
records them:

* ``frames(payloads, recv_ns)`` for consecutive websocket frames (``ws`` records);
* ``rest(path, body, symbol, recv_ns, params, request_id)`` for a REST answer (``rest``
  records: gap repairs, the stop's catch-up, trades re-applied from the warehouse on resume,
  whose ``params`` say ``origin: warehouse``: they go to the bars, not out again as new trades,
  and ``/api/v3/depth`` answers for the books);
* ``conn(meta, recv_ns)`` for connection records: ``seed`` (ids already accounted for),
  ``clock`` (the exchange clock's heartbeat, ``quant_core.exchange_clock``) and the books'
  settings and stream restarts (``settings()`` / ``restart_meta()`` say what to record);
* ``flush(stop_exchange_ms)`` on a clean stop;

and get a :class:`KernelOutput` of columns back. Everything that decides what is stored lives
here and nowhere else: decoding (``quant_core.decode``), de-duplication and gap tracking by
trade id (``GapTracker``), holding the aggregator while a gap is open (a bar is never final
before its missing trades are repaired), aggregation (``StreamingBarAggregator``), the choice
of the stream bars are built from, and which quotes are new. So live and replay are equal by
construction: the same records in the same order give the same output.

Books are one more kind of kernel state (``quant_core.kernel_books``, present when the streams
include depth): ``frames`` hands the depth frames of a burst to them, ``rest`` the
``/api/v3/depth`` answers, ``conn`` the book records (settings, a stream restart), and the
output carries their update columns, snapshots, resyncs and snapshot requests (``books``). The
live driver only fetches the requested snapshots and hands the answers back through ``rest``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quant_core.bars import BarRecord, StreamingBarAggregator
from quant_core.book_session import DEFAULT_DEPTH, DEFAULT_INTERVAL_MS, has_depth
from quant_core.decode import (
    AGG,
    TRADE,
    BatchDecoder,
    BookColumns,
    ControlEvent,
    FrameBatch,
    Normalizer,
    TradeColumns,
)
from quant_core.exchange_clock import clock_reading
from quant_core.gaps import Gap, GapTracker
from quant_core.kernel_books import BookRows, KernelBooks
from quant_core.rest_decode import (
    AGG_TRADES_PATH,
    HISTORICAL_TRADES_PATH,
    RestDecodeError,
    agg_trade_columns,
    decode_rest,
)

TRADE_PATHS = (AGG_TRADES_PATH, HISTORICAL_TRADES_PATH)
# ``origin`` of REST-shaped records that re-apply stored trades (the live driver's resume).
FROM_WAREHOUSE = "warehouse"
# Reject kind of a REST trade answer that cannot be decoded (frames use decode.REJECT_KINDS).
BAD_REST_ANSWER = "bad_rest_answer"
COUNTS = (
    "trade",
    "book_ticker",
    "control",
    "rejected",
    "rest_trade",
    "rest_rejected",
    "rest_other",
    "duplicate_trade",
    "reconnect",
)


def bar_stream(streams: Iterable[str]) -> str:
    """The stream bars are built from: aggTrade when subscribed, else trade. Both streams
    carry the same exchange trades, so aggregating both would count them twice."""
    kinds = {s.rsplit("@", 1)[-1] for s in streams}
    return "aggTrade" if "aggTrade" in kinds or not kinds & {"trade"} else "trade"


def _empty_trades() -> TradeColumns:
    i64 = np.empty(0, dtype=np.int64)
    return TradeColumns(
        i64, np.empty(0, np.int32), np.empty(0, np.int8), i64, i64, i64, i64, i64, i64,
        np.empty(0, bool),
    )  # fmt: skip


def _empty_books() -> BookColumns:
    i64 = np.empty(0, dtype=np.int64)
    return BookColumns(i64, np.empty(0, np.int32), i64, i64, i64, i64, i64, i64)


@dataclass
class KernelOutput:
    """What one call emitted. Symbol columns are codes into ``symbols`` (the kernel's table:
    it only grows, so a code keeps its symbol); ``index`` columns are positions in the batch
    of frames passed, its depth frames left out (0 for REST trades); ``*_recv_ns`` are the
    receive times given. ``books``: what the order books produced (``kernel_books.BookRows``),
    None when the call gave them nothing to do."""

    symbols: Sequence[str]
    trades: TradeColumns = field(default_factory=_empty_trades)
    trade_recv_ns: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    quotes: BookColumns = field(default_factory=_empty_books)
    quote_recv_ns: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    bars: list[BarRecord] = field(default_factory=list)  # new bars and corrected versions
    gaps: list[Gap] = field(default_factory=list)  # trade-id gaps opened
    rejects: list[tuple[int, str]] = field(default_factory=list)  # (frame index, reject kind)
    controls: list[ControlEvent] = field(default_factory=list)
    frames: int = 0
    bytes: int = 0
    duplicates: int = 0
    repaired: int = 0  # trade ids that filled a gap
    # A REST answer: how many trades it held, and the exchange time of its last one.
    rest_trades: int = 0
    rest_last_ms: int | None = None
    books: BookRows | None = None

    def __bool__(self) -> bool:
        return bool(len(self.trades) or len(self.quotes) or self.bars or self.gaps or self.books)


class IngestKernel:
    """The one processing path of live and replay (module docstring). Not thread-safe: one
    driver calls it, in log order."""

    def __init__(
        self,
        symbols: Iterable[str] = (),
        streams: Iterable[str] = ("aggTrade",),
        lateness_ms: int = 2000,
        source: str = "binance",
        book_depth: int = DEFAULT_DEPTH,
        book_interval_ms: int = DEFAULT_INTERVAL_MS,
    ) -> None:
        symbols = tuple(symbols)
        streams = tuple(streams)
        # The order books, when depth is subscribed (settings as recorded by ``settings``).
        self.books = (
            KernelBooks(symbols, book_depth, book_interval_ms) if has_depth(streams) else None
        )
        self.normalizer = Normalizer(symbols=set(symbols) or None)
        self.decoder = BatchDecoder(self.normalizer)
        self.symbols: list[str] = self.decoder.symbols  # code -> symbol, shared by all output
        self.bar_stream = bar_stream(streams)
        self._bar_kind = AGG if self.bar_stream == "aggTrade" else TRADE
        self.aggregator = StreamingBarAggregator(lateness_ms=lateness_ms, source=source)
        self.gaps = GapTracker()
        self.counts = dict.fromkeys(COUNTS, 0)
        self.first_exchange_ms: int | None = None
        self.last_exchange_ms: int | None = None
        self._last_quote_id: dict[int, int] = {}  # symbol code -> newest update id emitted

    # -- input ---------------------------------------------------------------------------------
    def frames(self, payloads: list[bytes], recv_ns: np.ndarray | None = None) -> KernelOutput:
        """Consecutive websocket frames, with their receive times (ns) when known."""
        frames, size = len(payloads), sum(map(len, payloads))
        rows = None
        if self.books is not None:
            depth, other = self.books.split(payloads)
            if depth:
                if recv_ns is None:
                    recv_ns = np.zeros(frames, np.int64)
                rows = self.books.frames(payloads, depth, recv_ns)
                payloads = [payloads[i] for i in other]
                recv_ns = recv_ns[np.asarray(other, dtype=np.int64)]
        out = self.decoded(self.decoder.decode(payloads), recv_ns)
        out.frames, out.bytes, out.books = frames, size, rows
        return out

    def decoded(self, batch: FrameBatch, recv_ns: np.ndarray | None = None) -> KernelOutput:
        """Frames already decoded with symbol codes of ``self.symbols`` (replay's workers
        decode in other processes and recode)."""
        out = KernelOutput(self.symbols)
        counts = self.counts
        for _, ev in batch.others:
            if ev is None:
                counts["rejected"] += 1
            else:
                counts["control"] += 1
                out.controls.append(ev)
        out.rejects = list(batch.rejects)
        trades, books = batch.trades, batch.books
        counts["trade"] += len(trades)
        counts["book_ticker"] += len(books)
        if recv_ns is None:
            recv_ns = np.zeros(max(_last_index(trades), _last_index(books)) + 1, np.int64)
        timed = books.ts >= 0
        if len(books) and bool(timed.any()):
            # Futures book tickers carry the exchange time: each moves the watermark at its
            # place among the trades, as if the frames were applied one by one.
            done = 0
            for at, ts in zip(books.index[timed].tolist(), books.ts[timed].tolist(), strict=True):
                end = int(np.searchsorted(trades.index, at))
                if end > done:
                    self._trades(trades.take(np.arange(done, end)), recv_ns, out, True)
                    done = end
                out.bars.extend(self.aggregator.advance(ts))
            if done < len(trades):
                self._trades(trades.take(np.arange(done, len(trades))), recv_ns, out, True)
        elif len(trades):
            self._trades(trades, recv_ns, out, True)
        if len(books):
            self._quotes(books, recv_ns, out)
        return out

    def rest(
        self,
        path: str,
        body: bytes,
        symbol: str,
        recv_ns: int = 0,
        params: dict[str, Any] | None = None,
        request_id: int | None = None,
    ) -> KernelOutput:
        """A REST answer, with the request's ``params`` as logged. Trade pages (gap repairs,
        catch-up) are applied like frames; trades re-applied from the warehouse on resume
        (``params["origin"] == "warehouse"``) go to the bars only: they are stored already.
        A depth answer goes to the books, with the ``request_id`` of the ``SnapshotRequest``
        it answers (None: a capture's, for the request pending for ``symbol``)."""
        store = not (params and params.get("origin") == FROM_WAREHOUSE)
        out = KernelOutput(self.symbols)
        if self.books is not None and self.books.is_answer(path):
            out.books = self.books.snapshot(symbol, request_id, body, recv_ns)
            return out
        if path not in TRADE_PATHS:
            self.counts["rest_other"] += 1
            return out
        columns = agg_trade_columns(body) if path == AGG_TRADES_PATH else None
        if columns is not None:  # the plain form: straight to columns
            n = len(columns[0])
            trades = TradeColumns(
                np.zeros(n, np.int64),
                np.full(n, self.decoder.code(symbol.upper()), np.int32),
                np.full(n, AGG, np.int8),
                *columns,
            )
        else:
            try:
                events = decode_rest(path, body, symbol)
            except RestDecodeError:
                self.counts["rest_rejected"] += 1
                out.rejects.append((0, BAD_REST_ANSWER))
                return out
            trades = self.decoder.trade_columns(events, [0] * len(events))
        self.counts["rest_trade"] += len(trades)
        out.rest_trades = len(trades)
        # arch2 (#18): a page asked from id X that begins after X proves X.. are not in the
        # exchange's history: those missing ids stop holding bars (else repair asks forever).
        from_id = (params or {}).get("fromId")
        if len(trades) and from_id is not None and int(trades.trade_id[0]) > int(from_id):
            stream = "aggTrade" if path == AGG_TRADES_PATH else "trade"
            self.gaps.absent(symbol.upper(), stream, int(from_id), int(trades.trade_id[0]) - 1)
        if len(trades):
            out.rest_last_ms = int(trades.ts[-1])
            recv = np.full(1, recv_ns, dtype=np.int64)
            self._trades(trades, recv, out, store)
        return out

    def conn(self, meta: dict[str, Any], recv_ns: int = 0) -> KernelOutput:
        """A connection record: ``seed`` (the driver knew these ids were accounted for),
        ``clock`` (the exchange's clock: quiet minutes close), ``reconnect`` (counted), and the
        books' records (``kernel_books``)."""
        out = KernelOutput(self.symbols)
        if self.books is not None:
            out.books = self.books.conn(meta, recv_ns)
            if out.books is not None:
                return out
        event = meta.get("event")
        if event == "reconnect":
            self.counts["reconnect"] += 1
        elif event == "seed":
            self.gaps.seed(meta["symbol"], meta["stream"], meta["last_id"], meta["last_ts_ms"])
        else:
            exchange_ms = clock_reading(meta)
            if exchange_ms is not None:
                out.bars = self.aggregator.heartbeat(exchange_ms)
        return out

    def clock_moves(self, exchange_now_ms: int) -> bool:
        """Whether a ``clock`` record at this exchange time would move the watermark (the
        live driver records only those)."""
        agg = self.aggregator
        wm = agg.watermark_ms
        return wm is None or exchange_now_ms - agg.lateness_ms > wm

    def flush(self, stop_exchange_ms: int) -> KernelOutput:
        """Clean stop: the bars of every minute ended by ``stop_exchange_ms``."""
        return KernelOutput(self.symbols, bars=self.aggregator.flush(stop_exchange_ms))

    # -- what the live driver records ----------------------------------------------------------
    def settings(self) -> list[dict[str, Any]]:
        """``conn`` records to log (and feed back through ``conn``) before any frame: the
        settings a replay needs to produce the same output."""
        return [] if self.books is None else [self.books.settings]

    def restart_meta(self) -> dict[str, Any] | None:
        """The ``conn`` record to log (and feed through ``conn``) when a new connection may have
        missed frames, or None when no state depends on that."""
        return None if self.books is None else self.books.restart_meta()

    # -- state the drivers read ----------------------------------------------------------------
    @property
    def watermark_ms(self) -> int | None:
        return self.aggregator.watermark_ms

    def open_gaps(self, symbol: str | None = None, stream: str | None = None) -> list[Gap]:
        return [
            g
            for g in self.gaps.open_gaps()
            if (symbol is None or g.symbol == symbol) and (stream is None or g.stream == stream)
        ]

    def hold_ms(self) -> int | None:
        return self.gaps.hold_ms()

    # -- internals -----------------------------------------------------------------------------
    def _trades(
        self, trades: TradeColumns, recv_ns: np.ndarray, out: KernelOutput, store: bool
    ) -> None:
        """De-duplicate, open gaps (holding the aggregator first), emit, aggregate, and release
        the hold once repairs closed the gaps (after the repaired trades are in the bars)."""
        gaps, agg = self.gaps, self.aggregator
        before = gaps.ids_repaired
        keep, opened = gaps.observe_columns(trades, self.symbols)
        out.repaired += gaps.ids_repaired - before
        if opened:
            out.gaps.extend(opened)
            out.bars.extend(agg.hold(gaps.hold_ms()))
        duplicates = len(trades) - int(keep.sum())
        if duplicates:
            self.counts["duplicate_trade"] += duplicates
            out.duplicates += duplicates
            trades = trades.take(np.flatnonzero(keep))
        if len(trades) and store:
            out.trades = _concat_trades(out.trades, trades)
            out.trade_recv_ns = np.concatenate([out.trade_recv_ns, recv_ns[trades.index]])
        of_bars = trades.kind == self._bar_kind
        bars = trades if bool(of_bars.all()) else trades.take(np.flatnonzero(of_bars))
        if len(bars):
            first, last = int(bars.ts.min()), int(bars.ts.max())
            if self.first_exchange_ms is None or first < self.first_exchange_ms:
                self.first_exchange_ms = first
            if self.last_exchange_ms is None or last > self.last_exchange_ms:
                self.last_exchange_ms = last
            out.bars.extend(
                agg.add_trades(
                    self.symbols, bars.code, bars.first, bars.last, bars.price, bars.qty,
                    bars.ts, ~bars.maker,
                )
            )  # fmt: skip
        hold = gaps.hold_ms()
        if hold != agg.hold_ms:
            out.bars.extend(agg.hold(hold))

    def _quotes(self, books: BookColumns, recv_ns: np.ndarray, out: KernelOutput) -> None:
        """Quotes newer than the last emitted update id of their symbol."""
        keep = np.zeros(len(books), dtype=bool)
        last_ids = self._last_quote_id
        for code in np.unique(books.code).tolist():
            rows = np.flatnonzero(books.code == code)
            ids = books.update_id[rows]
            last = last_ids.get(code, -1)
            newer = ids > np.maximum.accumulate(np.concatenate(([last], ids[:-1])))
            keep[rows[newer]] = True
            last_ids[code] = max(last, int(ids.max()))
        rows = np.flatnonzero(keep)
        b = books
        out.quotes = BookColumns(
            b.index[rows], b.code[rows], b.update_id[rows], b.bid[rows], b.bid_qty[rows],
            b.ask[rows], b.ask_qty[rows], b.ts[rows],
        )  # fmt: skip
        out.quote_recv_ns = recv_ns[out.quotes.index]


def _last_index(columns: TradeColumns | BookColumns) -> int:
    return int(columns.index.max()) if len(columns) else -1


def _concat_trades(a: TradeColumns, b: TradeColumns) -> TradeColumns:
    if not len(a):
        return b
    names = tuple(TradeColumns.__dataclass_fields__)
    return TradeColumns(*(np.concatenate([getattr(a, f), getattr(b, f)]) for f in names))
