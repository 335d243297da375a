"""Micro-batched decoding: many raw combined-stream frames -> columns, in a few native calls.

``decode_batch`` gives, for every frame, exactly what ``Normalizer.decode`` gives (same records,
same rejects counted and sampled, in the same order); tests hold the two to that. It is the hot
path of replay and of the live processor, which drain frames in bursts: per-frame work in
Python costs ~4 us, which caps one process far below the exchange's burst rates.

How: the frames are joined into one JSON array and decoded twice by msgspec in C, once into
``Raw`` spans (whose lengths prove that every frame is exactly one JSON value, so no frame can
swallow its neighbour) and once into one struct type holding the union of the fields of
aggTrade, trade and bookTicker data. Per-field lists are then checked and converted per stream
kind with numpy; prices must be the 8-decimal strings Binance sends (``"123.45000000"``).
Anything unusual - a frame that is not an object, a control message, a missing or mistyped
field, another number format, an unknown symbol - falls back to ``Normalizer.decode`` for
that frame (or for a whole group of frames when it cannot be attributed), which names it.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Annotated

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quant_core.gaps import Gap, GapTracker
from quant_core.normalize import (
    _MAX_MS,
    BookTickerEvent,
    ControlEvent,
    Event,
    Normalizer,
    TradeEvent,
    _Reject,
)

AGG, TRADE, BOOK = 1, 2, 3
STREAM_NAMES = {AGG: "aggTrade", TRADE: "trade"}
_KIND_OF = {"aggTrade": AGG, "trade": TRADE, "bookTicker": BOOK}
_NonNeg = Annotated[int, msgspec.Meta(ge=0)]
_Ms = Annotated[int, msgspec.Meta(ge=0, le=_MAX_MS)]
_SPLIT_BELOW = 64  # a failing group smaller than this is decoded frame by frame
_CACHE_LIMIT = 100_000


class _AnyData(msgspec.Struct, gc=False):
    s: str | None = None
    e: str | None = None
    a: _NonNeg | str | None = None  # aggregate id (aggTrade) or ask price (bookTicker)
    p: str | None = None
    q: str | None = None
    f: _NonNeg | None = None
    l: _NonNeg | None = None  # noqa: E741 - Binance's field name
    T: _Ms | None = None
    m: bool | None = None
    t: _NonNeg | None = None
    u: _NonNeg | None = None
    b: str | None = None
    B: str | None = None
    A: str | None = None


class _AnyFrame(msgspec.Struct, gc=False):
    stream: str | None = None
    data: _AnyData | None = None


_STREAM, _DATA = attrgetter("stream"), attrgetter("data")
_RAW = msgspec.json.Decoder(list[msgspec.Raw])
_TYPED = msgspec.json.Decoder(list[_AnyFrame])


@dataclass
class TradeColumns:
    """Trades in frame order. ``code`` indexes ``BatchDecoder.symbols``; ``kind`` is AGG or
    TRADE; prices and sizes are scaled by 10**8, times are exchange epoch milliseconds."""

    index: np.ndarray
    code: np.ndarray
    kind: np.ndarray
    trade_id: np.ndarray
    first: np.ndarray
    last: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    ts: np.ndarray
    maker: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def take(self, rows: np.ndarray) -> TradeColumns:
        return TradeColumns(*(getattr(self, f)[rows] for f in _TRADE_FIELDS))


@dataclass
class BookColumns:
    """Book tickers in frame order; ``ts`` is -1 where the event has no exchange time (spot)."""

    index: np.ndarray
    code: np.ndarray
    update_id: np.ndarray
    bid: np.ndarray
    bid_qty: np.ndarray
    ask: np.ndarray
    ask_qty: np.ndarray
    ts: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


_TRADE_FIELDS = tuple(TradeColumns.__dataclass_fields__)


def observe_trades(
    gaps: GapTracker, trades: TradeColumns, symbols: Sequence[str]
) -> tuple[np.ndarray, list[Gap]]:
    """``GapTracker.observe_many`` for each (symbol, stream) series of a burst: (mask of the
    trades not seen before, the gaps they opened)."""
    series = (trades.code.astype(np.int64) << 8) | trades.kind
    keep = np.ones(len(trades), dtype=bool)
    opened: list[Gap] = []
    for value in np.unique(series).tolist():
        rows = np.flatnonzero(series == value)
        mask, found = gaps.observe_many(
            symbols[value >> 8], STREAM_NAMES[value & 0xFF], trades.trade_id[rows], trades.ts[rows]
        )
        if mask is not None:
            keep[rows[~mask]] = False
        opened.extend(found)
    return keep, opened


_BOOK_FIELDS = tuple(BookColumns.__dataclass_fields__)


@dataclass
class FrameBatch:
    trades: TradeColumns
    books: BookColumns
    # Frames that are neither: control messages and rejects (None), by frame index.
    others: list[tuple[int, ControlEvent | None]] = field(default_factory=list)

    def recode(self, codes: np.ndarray) -> FrameBatch:
        """The batch with symbol code ``c`` replaced by ``codes[c]``: frames decoded by one
        ``BatchDecoder`` (a replay worker's) handed to another."""
        t, b = self.trades, self.books
        t = TradeColumns(t.index, codes[t.code], *(getattr(t, f) for f in _TRADE_FIELDS[2:]))
        b = BookColumns(b.index, codes[b.code], *(getattr(b, f) for f in _BOOK_FIELDS[2:]))
        return FrameBatch(t, b, self.others)

    def events(self, symbols: Sequence[str]) -> list[Event]:
        """The records ``Normalizer.decode`` returns for the frames, in order (rejects left out)."""
        return [ev for _, ev in self.items(symbols) if ev is not None]

    def items(self, symbols: Sequence[str]) -> list[tuple[int, Event | None]]:
        """(frame index, record or None for a rejected frame), in frame order."""
        out: list[tuple[int, Event | None]] = list(self.others)
        t = self.trades
        for row in range(len(t)):
            k = int(t.kind[row])
            out.append(
                (
                    int(t.index[row]),
                    TradeEvent(
                        symbols[t.code[row]],
                        STREAM_NAMES[k],
                        int(t.trade_id[row]),
                        int(t.first[row]),
                        int(t.last[row]),
                        int(t.price[row]),
                        int(t.qty[row]),
                        int(t.ts[row]),
                        bool(t.maker[row]),
                    ),
                )
            )
        b = self.books
        for row in range(len(b)):
            ts = int(b.ts[row])
            out.append(
                (
                    int(b.index[row]),
                    BookTickerEvent(
                        symbols[b.code[row]],
                        int(b.update_id[row]),
                        int(b.bid[row]),
                        int(b.bid_qty[row]),
                        int(b.ask[row]),
                        int(b.ask_qty[row]),
                        None if ts < 0 else ts,
                    ),
                )
            )
        out.sort(key=lambda pair: pair[0])
        return out


class BatchDecoder:
    """``decode(frames)`` -> :class:`FrameBatch`; rejects are counted on ``normalizer``."""

    def __init__(self, normalizer: Normalizer) -> None:
        self.normalizer = normalizer
        self.symbols: list[str] = []  # code -> canonical symbol
        self._codes: dict[str, int] = {}  # canonical symbol -> code
        self._raw_codes: dict[str, int] = {}  # symbol as sent -> code (validated once)
        self._kinds: dict[str, int] = {}  # stream name -> kind (0: not for the fast path)

    def code(self, symbol: str) -> int:
        code = self._codes.get(symbol)
        if code is None:
            code = self._codes[symbol] = len(self.symbols)
            self.symbols.append(symbol)
        return code

    # -- entry -----------------------------------------------------------------------------
    def decode(self, frames: Sequence[bytes]) -> FrameBatch:
        if not isinstance(frames, list):
            frames = list(frames)
        parts: list[_Part] = []
        self._decode_into(frames, 0, parts)
        return _merge(parts)

    def _decode_into(self, frames: list[bytes], offset: int, parts: list[_Part]) -> None:
        if not frames:
            return
        decoded = self._typed(frames)
        if decoded is None:
            if len(frames) < _SPLIT_BELOW:
                parts.append(self._per_frame(frames, range(len(frames)), offset))
                return
            half = len(frames) // 2
            self._decode_into(frames[:half], offset, parts)
            self._decode_into(frames[half:], offset + half, parts)
            return
        parts.append(self._columns(frames, decoded, offset))

    @staticmethod
    def _typed(frames: list[bytes]) -> list[_AnyFrame] | None:
        try:
            joined = b"[" + b",".join(frames) + b"]"
        except TypeError:  # a str frame: the per-frame path takes any type
            return None
        try:
            spans = _RAW.decode(joined)
            # Equal lengths, in order, mean each frame is exactly one element: a frame cannot
            # end inside a string its neighbour closes, or hold two values.
            if len(spans) != len(frames) or list(map(len, spans)) != list(map(len, frames)):
                return None
            return _TYPED.decode(joined)
        except (msgspec.MsgspecError, RecursionError):
            return None

    # -- columns ---------------------------------------------------------------------------
    def _columns(self, frames: list[bytes], decoded: list[_AnyFrame], offset: int) -> _Part:
        streams = list(map(_STREAM, decoded))
        try:
            kinds = list(map(self._kinds.__getitem__, streams))
        except (KeyError, TypeError):
            kinds = [self._kind(s) for s in streams]
        kind_arr = np.array(kinds, dtype=np.int8)
        slow: list[int] = np.flatnonzero(kind_arr == 0).tolist()
        trades: list[tuple[np.ndarray, ...]] = []
        books = None
        for kind in (AGG, TRADE, BOOK):
            rows = np.flatnonzero(kind_arr == kind)
            if not len(rows):
                continue
            data = list(map(_DATA, map(decoded.__getitem__, rows.tolist())))
            got = self._book(data) if kind == BOOK else self._trades(data, kind)
            if got is None:  # something in this group needs the exact per-frame path
                slow.extend(rows.tolist())
                continue
            good, cols = got
            if not good.all():
                slow.extend(rows[~good].tolist())
                rows = rows[good]
                cols = tuple(c[good] for c in cols)
            if kind == BOOK:
                books = (rows + offset, *cols)
            else:
                trades.append((rows + offset, *cols))
        part = _Part(trades, [books] if books is not None else [], [])
        if slow:
            slow.sort()
            extra = self._per_frame(frames, slow, offset)
            part.trades.extend(extra.trades)
            part.books.extend(extra.books)
            part.others = extra.others
        return part

    def _kind(self, stream: str | None) -> int:
        if not isinstance(stream, str):
            return 0
        kind = _KIND_OF.get(stream.partition("@")[2], 0)
        if len(self._kinds) < _CACHE_LIMIT:
            self._kinds[stream] = kind
        return kind

    def _symbol_codes(self, raw: list) -> np.ndarray | None:
        cache = self._raw_codes
        try:
            return np.array([cache[s] for s in raw], dtype=np.int32)
        except (KeyError, TypeError):
            pass
        for s in set(map(str, raw)) - cache.keys() if None not in raw else ():
            try:
                symbol = self.normalizer._symbol(s)
            except _Reject:
                continue
            if len(cache) < _CACHE_LIMIT:
                cache[s] = self.code(symbol)
        codes = [cache.get(s, -1) if isinstance(s, str) else -1 for s in raw]
        return np.array(codes, dtype=np.int32)

    def _trades(self, data: list[_AnyData | None], kind: int):
        if None in data:
            return None
        name = STREAM_NAMES[kind]
        e = [d.e for d in data]
        if e.count(name) != len(e):
            return None
        p = [d.p for d in data]
        q = [d.q for d in data]
        m = [d.m for d in data]
        if None in p or None in q or None in m:
            return None
        try:  # array() refuses None and str: a missing or mistyped field goes the exact way
            ts = _int64([d.T for d in data])
            if kind == AGG:
                ids = _int64([d.a for d in data])
                first = _int64([d.f for d in data])
                last = _int64([d.l for d in data])
            else:
                ids = first = last = _int64([d.t for d in data])
        except (TypeError, OverflowError):
            return None
        codes = self._symbol_codes([d.s for d in data])
        values, ok = scaled_texts(p + q)
        n = len(data)
        price, qty = values[:n], values[n:]
        good = (codes >= 0) & ok[:n] & ok[n:] & (price > 0) & (qty > 0) & (first <= last)
        maker = np.frombuffer(array("b", m), dtype=np.int8).astype(bool)
        kinds = np.full(n, kind, dtype=np.int8)
        return good, (codes, kinds, ids, first, last, price, qty, ts, maker)

    def _book(self, data: list[_AnyData | None]):
        if None in data:
            return None
        e = [d.e for d in data]
        if e.count(None) + e.count("bookTicker") != len(e):
            return None
        prices = [d.b for d in data] + [d.B for d in data] + [d.a for d in data]
        prices += [d.A for d in data]
        try:  # join() in scaled_texts refuses anything but str (a JSON number for the ask price)
            values, ok = scaled_texts(prices)
            update_id = _int64([d.u for d in data])
        except (TypeError, OverflowError):
            return None
        ts = _int64([-1 if d.T is None else d.T for d in data])
        codes = self._symbol_codes([d.s for d in data])
        n = len(data)
        bid, bid_qty, ask, ask_qty = (values[k * n : (k + 1) * n] for k in range(4))
        ok = ok[:n] & ok[n : 2 * n] & ok[2 * n : 3 * n] & ok[3 * n :]
        good = (codes >= 0) & ok & (bid > 0) & (ask > 0) & (bid <= ask)
        return good, (codes, update_id, bid, bid_qty, ask, ask_qty, ts)

    def trade_columns(self, events: list[TradeEvent], index: list[int] | None = None):
        """Trade records (REST repairs, the exact path) as columns; ``index`` defaults to
        their positions."""
        n = len(events)

        def ints(name: str) -> np.ndarray:
            return np.fromiter((getattr(e, name) for e in events), np.int64, n)

        return TradeColumns(
            np.arange(n, dtype=np.int64) if index is None else np.array(index, dtype=np.int64),
            np.array([self.code(e.symbol) for e in events], dtype=np.int32),
            np.array([AGG if e.stream == "aggTrade" else TRADE for e in events], dtype=np.int8),
            ints("trade_id"),
            ints("first_trade_id"),
            ints("last_trade_id"),
            ints("price"),
            ints("qty"),
            ints("ts_event_ms"),
            np.fromiter((e.is_buyer_maker for e in events), bool, n),
        )

    # -- exact path --------------------------------------------------------------------------
    def _per_frame(self, frames: list[bytes], rows, offset: int) -> _Part:
        decode = self.normalizer.decode
        trades: list[TradeEvent] = []
        trade_index: list[int] = []
        books: list[tuple] = []
        others: list[tuple[int, ControlEvent | None]] = []
        for i in rows:
            ev = decode(frames[i])
            if type(ev) is TradeEvent:
                trades.append(ev)
                trade_index.append(i + offset)
            elif type(ev) is BookTickerEvent:
                books.append(
                    (
                        i + offset,
                        self.code(ev.symbol),
                        ev.update_id,
                        ev.bid_price,
                        ev.bid_qty,
                        ev.ask_price,
                        ev.ask_qty,
                        -1 if ev.ts_event_ms is None else ev.ts_event_ms,
                    )
                )
            else:
                others.append((i + offset, ev))
        trade_cols = []
        if trades:
            cols = self.trade_columns(trades, trade_index)
            trade_cols.append(tuple(getattr(cols, f) for f in _TRADE_FIELDS))
        return _Part(trade_cols, [_rows_to_columns(books, _BOOK_DTYPES)], others)


@dataclass
class _Part:
    trades: list[tuple[np.ndarray, ...]]
    books: list[tuple[np.ndarray, ...]]
    others: list[tuple[int, ControlEvent | None]]


_TRADE_DTYPES = (np.int64, np.int32, np.int8, *(np.int64,) * 6, bool)
_BOOK_DTYPES = (np.int64, np.int32, *(np.int64,) * 6)


def _rows_to_columns(rows: list[tuple], dtypes) -> tuple[np.ndarray, ...]:
    if not rows:
        return tuple(np.empty(0, dtype=d) for d in dtypes)
    columns = zip(*rows, strict=True)
    return tuple(np.array(col, dtype=d) for col, d in zip(columns, dtypes, strict=True))


def _merge(parts: list[_Part]) -> FrameBatch:
    trade_groups = [t for p in parts for t in p.trades]
    book_groups = [b for p in parts for b in p.books]
    others = sorted((o for p in parts for o in p.others), key=lambda pair: pair[0])
    return FrameBatch(
        TradeColumns(*_concat(trade_groups, _TRADE_DTYPES)),
        BookColumns(*_concat(book_groups, _BOOK_DTYPES)),
        others,
    )


def _concat(groups: list[tuple[np.ndarray, ...]], dtypes) -> tuple[np.ndarray, ...]:
    groups = [g for g in groups if len(g[0])]
    if not groups:
        return tuple(np.empty(0, dtype=d) for d in dtypes)
    if len(groups) == 1:
        cols = groups[0]
    else:
        cols = tuple(np.concatenate(c) for c in zip(*groups, strict=True))
        order = np.argsort(cols[0], kind="stable")
        cols = tuple(c[order] for c in cols)
    return tuple(np.asarray(c, dtype=d) for c, d in zip(cols, dtypes, strict=True))


def scaled_texts(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``"123.45000000"`` strings -> (int64 counts of 10**-8, ok mask). Only the exact
    8-decimal ASCII form with at most 10 integer digits is taken here; anything else is left
    to the exact per-frame path (``ok`` False)."""
    n = len(texts)
    joined = "".join(texts)  # TypeError when one is not a str
    lengths = np.fromiter(map(len, texts), dtype=np.int32, count=n)
    if not joined.isascii():  # code points != bytes; rare enough for the per-frame path
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    arr = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(joined.encode()))
    dot = pc.find_substring(arr, ".").to_numpy()
    ok = (dot == lengths - 9) & (dot >= 1) & (lengths <= 19)
    digits = pc.replace_substring(arr, ".", "", max_replacements=1)
    ok &= pc.ascii_is_decimal(digits).to_numpy(zero_copy_only=False)
    value = pc.cast(pc.if_else(pa.array(ok), digits, "0"), pa.int64()).to_numpy()
    return value, ok


def _int64(values: list) -> np.ndarray:
    return np.frombuffer(array("q", values), dtype=np.int64)
