"""Raw Binance combined-stream frames -> typed records or columns: the one decoder.

Two entry points share every rule and the one set of record kinds and reject kinds:

* ``Normalizer.decode(frame)``: one frame -> ``TradeEvent`` / ``BookTickerEvent`` /
  ``ControlEvent``, or None for a rejected frame (counted by kind in ``rejects``, the first raw
  frame of each kind kept in ``samples``). ``quant_core.formats.binance.parse_combined_frame``
  is the validating reference it is checked against in tests (same values, and every frame the
  contracts reject is rejected here too). This path is deliberately a little stricter than the
  contracts: numbers must be JSON strings of plain digits (no sign, exponent or whitespace) with
  at most 8 significant decimals and a scaled value within int64, ids and times JSON integers,
  ``m`` a JSON boolean, and the event type inside ``data`` must match the stream name. Binance
  sends nothing else.
* ``BatchDecoder.decode(frames)``: a burst -> ``FrameBatch`` columns, exactly what ``decode``
  gives frame by frame (same records, same rejects counted and sampled, in the same order);
  tests hold the two to that. It is the hot path of the ingest kernel: per-frame work in Python
  costs ~4 us, which caps one process far below the exchange's burst rates. Frames in the exact
  byte layouts Binance sends are read first into columns in one C pass
  (``quant_core/native/frames.c``, no Python object per frame; frames it does not take byte for
  byte, good or bad, come back for the paths below, so every reject keeps its reason). The
  others are joined into one JSON array and decoded twice by msgspec in C, once into ``Raw``
  spans (whose lengths prove that every frame is exactly one JSON value, so no frame can swallow
  its neighbour) and once into one struct type holding the union of the fields of aggTrade,
  trade and bookTicker data. Per-field lists are checked and converted per stream kind with
  numpy; anything unusual falls back to ``Normalizer.decode`` for that frame (or a whole group
  of frames when it cannot be attributed), which names it.

Records are ``msgspec.Struct`` (frozen, ``gc=False``): on CPython they are created about 15 %
faster than a NamedTuple and several times faster than a frozen dataclass, compare by value and
hash like tuples. Symbols are validated once and numbered by one ``SymbolTable`` (shared with
``quant_core.depth_decode``), so columns carry an int32 code instead of a string per row.

Prices and quantities are integers scaled by ``PRICE_SCALE`` (10**8, Binance's precision),
parsed from the decimal strings exactly: ``"56123.45000000"`` -> ``5612345000000``.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Annotated, Any

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from quant_core.contracts.types import SYMBOL_PATTERN
from quant_core.native import frames as native_frames

PRICE_SCALE = 10**8
_DECIMALS = 8
# Stream kinds: ``TradeColumns.kind`` holds AGG or TRADE (``quant_core/native/frames.c`` too).
AGG, TRADE, BOOK = 1, 2, 3
# The contracts turn ``T`` into a datetime, which stops at year 9999.
MAX_MS = 253_402_300_799_999

# Reject kinds, in the order a frame is checked.
MALFORMED_JSON = "malformed_json"
UNKNOWN_STREAM = "unknown_stream"
UNSUPPORTED_EVENT = "unsupported_event"
MISSING_FIELD = "missing_field"
BAD_FIELD = "bad_field"  # a non-numeric field of the wrong type, or a symbol the contracts refuse
BAD_NUMBER = "bad_number"
CROSSED_BOOK = "crossed_book"
UNSUBSCRIBED_SYMBOL = "unsubscribed_symbol"
REJECT_KINDS = (
    MALFORMED_JSON,
    UNKNOWN_STREAM,
    UNSUPPORTED_EVENT,
    MISSING_FIELD,
    BAD_FIELD,
    BAD_NUMBER,
    CROSSED_BOOK,
    UNSUBSCRIBED_SYMBOL,
)

# Market streams Binance publishes that this fast path does not turn into records: counted as
# unsupported_event (a subscription we chose), unlike a stream name we cannot place at all.
_OTHER_STREAMS = re.compile(
    r"^(depth(5|10|20)?(@\d+ms)?|kline_\w+|(mini)?[tT]icker(_\w+)?|avgPrice|markPrice(@1s)?"
    r"|forceOrder|compositeIndex|contractInfo|assetIndex(@1s)?)$"
)
_SYMBOL = re.compile(SYMBOL_PATTERN)
_PLAIN_DECIMAL = re.compile(r"(\d+)(?:\.(\d+))?")
_MAX_NUMBER_CHARS = 40  # far above any real price; keeps int() away from huge inputs
_CACHE_LIMIT = 100_000
# Scaled prices and sizes are int64 columns: a larger value is a bad number, like a larger id.
_INT64_MAX = 2**63 - 1

# Ids must fit the int64 columns (and ClickHouse): a larger one is a bad number.
NonNegInt = Annotated[int, msgspec.Meta(ge=0, le=_INT64_MAX)]
EpochMs = Annotated[int, msgspec.Meta(ge=0, le=MAX_MS)]


class TradeEvent(msgspec.Struct, frozen=True, gc=False):
    """One trade (``stream='trade'``) or aggregated trade (``'aggTrade'``).

    ``trade_id`` is Binance's ``a`` (aggregate id) or ``t``; ``first_trade_id``..
    ``last_trade_id`` are the exchange trade ids covered (both ``t`` for a plain trade), the id
    space bars are ordered and de-duplicated in. ``price``/``qty`` are scaled by 10**8.
    """

    symbol: str
    stream: str
    trade_id: int
    first_trade_id: int
    last_trade_id: int
    price: int
    qty: int
    ts_event_ms: int
    is_buyer_maker: bool


class BookTickerEvent(msgspec.Struct, frozen=True, gc=False):
    """Best bid/ask; ``ts_event_ms`` is ``T`` on futures and None on spot (no event time)."""

    symbol: str
    update_id: int
    bid_price: int
    bid_qty: int
    ask_price: int
    ask_qty: int
    ts_event_ms: int | None


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """Not market data: ``result`` (method ack), ``error`` (method error), ``serverShutdown``."""

    kind: str
    payload: dict[str, Any]


Event = TradeEvent | BookTickerEvent | ControlEvent


# Wire shapes. Every field the record needs is required, so a missing one is a ValidationError
# raised in C; the slow path then works out which reject kind it was.
class _AggTradeData(msgspec.Struct, gc=False):
    s: str
    a: NonNegInt
    p: str
    q: str
    f: NonNegInt
    l: NonNegInt  # noqa: E741 - Binance's field name
    T: EpochMs
    m: bool
    e: str


class _TradeData(msgspec.Struct, gc=False):
    s: str
    t: NonNegInt
    p: str
    q: str
    T: EpochMs
    m: bool
    e: str


class _BookTickerData(msgspec.Struct, gc=False):
    s: str
    u: NonNegInt
    b: str
    B: str
    a: str
    A: str
    T: EpochMs | None = None
    e: str = "bookTicker"  # spot omits it


class _AggTradeFrame(msgspec.Struct, gc=False):
    stream: str
    data: _AggTradeData


class _TradeFrame(msgspec.Struct, gc=False):
    stream: str
    data: _TradeData


class _BookTickerFrame(msgspec.Struct, gc=False):
    stream: str
    data: _BookTickerData


STREAM_NAMES = {AGG: "aggTrade", TRADE: "trade"}
STREAM_KINDS = {"aggTrade": AGG, "trade": TRADE, "bookTicker": BOOK}
_DATA_TYPES = {AGG: _AggTradeData, TRADE: _TradeData, BOOK: _BookTickerData}
_DECODERS = {
    b"aggTrade": (AGG, msgspec.json.Decoder(_AggTradeFrame)),
    b"trade": (TRADE, msgspec.json.Decoder(_TradeFrame)),
    b"bookTicker": (BOOK, msgspec.json.Decoder(_BookTickerFrame)),
}
_PREFIX = b'{"stream":"'  # 11 bytes: the stream name starts at offset 11


def scaled(text: str) -> int:
    """Exact decimal string -> integer count of 10**-8 units; -1 when it is not one.

    Accepts decimal digits with an optional fraction whose digits past the 8th are all zero;
    no sign, exponent, whitespace, underscore, NaN or infinity (int() would take some of those).
    Digits are Unicode decimal digits (str.isdecimal), which int() and Decimal() read alike.
    """
    # Binance spot always sends exactly 8 decimals: one slice, one check, one int().
    if type(text) is str and len(text) > 9 and text[-9] == ".":
        digits = text[:-9] + text[-8:]
        if digits.isdecimal() and len(digits) < _MAX_NUMBER_CHARS:
            return int(digits)
        return -1
    return _scaled_general(text)


def _scaled_general(text: str) -> int:
    if not isinstance(text, str) or len(text) > _MAX_NUMBER_CHARS:
        return -1
    match = _PLAIN_DECIMAL.fullmatch(text)
    if match is None:
        return -1
    whole, frac = match.group(1), match.group(2) or ""
    if len(frac) > _DECIMALS:
        if frac[_DECIMALS:].strip("0"):
            return -1  # finer than 10**-8: cannot be represented exactly
        frac = frac[:_DECIMALS]
    return int(whole) * PRICE_SCALE + int(frac.ljust(_DECIMALS, "0"))


class Rejected(Exception):
    """A frame refused, with its reject kind (one of ``REJECT_KINDS``)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class SymbolTable:
    """Symbols as sent -> canonical (upper-case) symbol and a small int code, validated once.

    ``names[code]`` is the symbol; ``allowed`` (any case) restricts to those symbols.
    ``lookup`` raises ``Rejected`` (``bad_field`` / ``unsubscribed_symbol``). One table serves
    every decoder of a stream (trades, book tickers, depth), so their codes agree.
    """

    def __init__(self, symbols: Iterable[str] | None = None) -> None:
        self.allowed = None if symbols is None else frozenset(s.upper() for s in symbols)
        self.names: list[str] = []  # code -> canonical symbol
        self.codes: dict[str, int] = {}  # canonical symbol -> code
        self.raw_codes: dict[str, int] = {}  # symbol as sent -> code (validated)

    def code(self, symbol: str) -> int:
        """The code of a canonical symbol (a new one gets the next code)."""
        code = self.codes.get(symbol)
        if code is None:
            code = self.codes[symbol] = len(self.names)
            self.names.append(symbol)
        return code

    def lookup(self, raw_symbol: str) -> int:
        """The code of a symbol as sent; ``Rejected`` when it is not one we take."""
        code = self.raw_codes.get(raw_symbol) if isinstance(raw_symbol, str) else None
        if code is not None:
            return code
        if not isinstance(raw_symbol, str) or _SYMBOL.match(raw_symbol) is None:
            raise Rejected(BAD_FIELD)
        symbol = raw_symbol.upper()
        if self.allowed is not None and symbol not in self.allowed:
            raise Rejected(UNSUBSCRIBED_SYMBOL)
        code = self.code(symbol)
        if len(self.raw_codes) < _CACHE_LIMIT:
            self.raw_codes[raw_symbol] = code
        return code


@dataclass
class Normalizer:
    """Frames -> records. Never raises on bad input: it returns None and counts the frame.

    ``rejects`` counts bad frames by kind (``REJECT_KINDS``); ``samples`` keeps the first raw
    frame of each kind for inspection. ``symbols`` (any case) restricts output to those symbols.
    """

    symbols: set[str] | None = None
    rejects: dict[str, int] = field(default_factory=dict)
    samples: dict[str, bytes] = field(default_factory=dict)
    # The kind of the last frame rejected (the kernel reports rejects per frame).
    last_reject: str | None = None

    def __post_init__(self) -> None:
        self.table = SymbolTable(self.symbols)

    def decode(self, raw: bytes | str) -> Event | None:
        try:
            if type(raw) is not bytes:
                raw = raw.encode() if isinstance(raw, str) else bytes(raw)
            # Peek at the stream name to pick the typed decoder: cheaper than decoding twice.
            if raw.startswith(_PREFIX):
                hit = _DECODERS.get(raw[raw.find(b"@", 11) + 1 : raw.find(b'"', 11)])
                if hit is not None:
                    try:
                        data = hit[1].decode(raw).data
                    except msgspec.MsgspecError:
                        return self._decode_slow(raw)
                    return self._build(hit[0], data)
            return self._decode_slow(raw)
        except Rejected as rej:
            return self._reject(rej.kind, raw)
        except Exception:
            # Something the fast path did not foresee (int() of a 5000-digit number...): the
            # slow path names it; a bug in either must still not stop the live loop.
            return self._decode_guarded(raw)

    def _decode_guarded(self, raw: bytes | str) -> Event | None:
        try:
            return self._decode_slow(raw if isinstance(raw, bytes) else str(raw).encode())
        except Rejected as rej:
            return self._reject(rej.kind, raw)
        except ValueError:  # int() of a number string too long to convert
            return self._reject(BAD_NUMBER, raw)
        except Exception:
            return self._reject(UNSUPPORTED_EVENT, raw)

    def decode_many(self, frames: Iterable[bytes | str]) -> list[Event]:
        """Records of the good frames, in order (bad ones are counted as in ``decode``)."""
        decode = self.decode
        out = []
        append = out.append
        for raw in frames:
            ev = decode(raw)
            if ev is not None:
                append(ev)
        return out

    def _build(self, kind: int, d: Any) -> Event:
        table = self.table
        symbol = table.names[table.lookup(d.s)]
        if kind != BOOK:
            p, q = d.p, d.q
            # Inline form of scaled() for the 8-decimal strings spot sends (a call per number
            # costs more than the parsing): exactly one dot, 8 places, decimal digits only.
            # isdecimal() accepts what int() and Decimal() both read as digits, so the value
            # is the contract's; a string int() cannot take (huge) raises into the slow path.
            if p[-9:-8] == "." and q[-9:-8] == ".":
                p, q = p.replace(".", "", 1), q.replace(".", "", 1)
                if (p + q).isdecimal():
                    price, qty = int(p), int(q)
                else:
                    price = qty = -1
            else:
                price, qty = scaled(p), scaled(q)
            if not (0 < price <= _INT64_MAX and 0 < qty <= _INT64_MAX):
                raise Rejected(BAD_NUMBER)
            if kind == AGG:
                if d.e != "aggTrade":
                    raise Rejected(UNSUPPORTED_EVENT)
                if d.f > d.l:
                    raise Rejected(BAD_NUMBER)
                return TradeEvent(symbol, "aggTrade", d.a, d.f, d.l, price, qty, d.T, d.m)
            if d.e != "trade":
                raise Rejected(UNSUPPORTED_EVENT)
            return TradeEvent(symbol, "trade", d.t, d.t, d.t, price, qty, d.T, d.m)
        if d.e != "bookTicker":
            raise Rejected(UNSUPPORTED_EVENT)
        b, bq, a, aq = d.b, d.B, d.a, d.A
        if b[-9:-8] == "." and bq[-9:-8] == "." and a[-9:-8] == "." and aq[-9:-8] == ".":
            b, bq = b.replace(".", "", 1), bq.replace(".", "", 1)
            a, aq = a.replace(".", "", 1), aq.replace(".", "", 1)
            if (b + bq + a + aq).isdecimal():
                bid, bid_qty, ask, ask_qty = int(b), int(bq), int(a), int(aq)
            else:
                bid = bid_qty = ask = ask_qty = -1
        else:
            bid, bid_qty, ask, ask_qty = scaled(b), scaled(bq), scaled(a), scaled(aq)
        if not (0 < bid <= _INT64_MAX and 0 < ask <= _INT64_MAX):
            raise Rejected(BAD_NUMBER)
        if not (0 <= bid_qty <= _INT64_MAX and 0 <= ask_qty <= _INT64_MAX):
            raise Rejected(BAD_NUMBER)
        if bid > ask:
            raise Rejected(CROSSED_BOOK)
        return BookTickerEvent(symbol, d.u, bid, bid_qty, ask, ask_qty, d.T)

    def _decode_slow(self, raw: bytes) -> Event:
        """Anything the typed fast path did not take: control frames, other key orders, and
        frames that failed typed decoding (to name what was wrong)."""
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise Rejected(MALFORMED_JSON) from None
        if not isinstance(frame, dict):
            raise Rejected(MALFORMED_JSON)
        if "stream" not in frame:
            return _control(frame)
        stream, data = frame["stream"], frame.get("data")
        if not isinstance(stream, str) or "@" not in stream:
            raise Rejected(UNKNOWN_STREAM)
        if not isinstance(data, dict):
            raise Rejected(MISSING_FIELD)
        if data.get("e") == "serverShutdown":
            return ControlEvent("serverShutdown", frame)
        suffix = stream.split("@", 1)[1]
        kind = STREAM_KINDS.get(suffix)
        if kind is None:
            raise Rejected(UNSUPPORTED_EVENT if _OTHER_STREAMS.match(suffix) else UNKNOWN_STREAM)
        if kind == BOOK:
            data = {"e": "bookTicker", **data}
        try:
            wire = msgspec.convert(data, _DATA_TYPES[kind])
        except msgspec.ValidationError as exc:
            raise Rejected(_classify(str(exc), kind)) from None
        return self._build(kind, wire)

    def merge(self, later: Normalizer) -> None:
        """Take in the rejects of a normalizer that decoded frames recorded after ours."""
        for kind, n in later.rejects.items():
            self.rejects[kind] = self.rejects.get(kind, 0) + n
        for kind, raw in later.samples.items():
            self.samples.setdefault(kind, raw)

    def _reject(self, kind: str, raw: bytes | str) -> None:
        self.last_reject = kind
        self.rejects[kind] = self.rejects.get(kind, 0) + 1
        if kind not in self.samples:
            self.samples[kind] = raw if isinstance(raw, bytes) else str(raw).encode()
        return None


_NUMERIC = {"a", "t", "f", "l", "T", "u", "p", "q", "b", "B", "A"}
_FIELD_IN_ERROR = re.compile(r"`\$\.(\w+)`|field `(\w+)`")


def _classify(message: str, kind: int) -> str:
    if "missing required field" in message:
        return MISSING_FIELD
    match = _FIELD_IN_ERROR.search(message)
    name = (match.group(1) or match.group(2)) if match else ""
    if name == "a" and kind == BOOK:
        return BAD_NUMBER  # the ask price, a string field like p/q
    return BAD_NUMBER if name in _NUMERIC else BAD_FIELD


def _control(frame: dict[str, Any]) -> ControlEvent:
    if "error" in frame:
        return ControlEvent("error", frame)
    if "result" in frame and "id" in frame:
        return ControlEvent("result", frame)
    if frame.get("e") == "serverShutdown":
        return ControlEvent("serverShutdown", frame)
    raise Rejected(UNKNOWN_STREAM if "data" in frame else UNSUPPORTED_EVENT)


# -- bursts as columns ----------------------------------------------------------------------

_SPLIT_BELOW = 64  # a failing group smaller than this is decoded frame by frame


class _AnyData(msgspec.Struct, gc=False):
    s: str | None = None
    e: str | None = None
    a: NonNegInt | str | None = None  # aggregate id (aggTrade) or ask price (bookTicker)
    p: str | None = None
    q: str | None = None
    f: NonNegInt | None = None
    l: NonNegInt | None = None  # noqa: E741 - Binance's field name
    T: EpochMs | None = None
    m: bool | None = None
    t: NonNegInt | None = None
    u: NonNegInt | None = None
    b: str | None = None
    B: str | None = None
    A: str | None = None


class _AnyFrame(msgspec.Struct, gc=False):
    stream: str | None = None
    data: _AnyData | None = None


_STREAM, _DATA = attrgetter("stream"), attrgetter("data")
_AGG_FIELDS = attrgetter("s", "e", "p", "q", "m", "T", "a", "f", "l")
_TRADE_FIELDS_OF = attrgetter("s", "e", "p", "q", "m", "T", "t")
_BOOK_FIELDS_OF = attrgetter("s", "e", "b", "B", "a", "A", "u", "T")
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
_BOOK_FIELDS = tuple(BookColumns.__dataclass_fields__)


@dataclass
class FrameBatch:
    trades: TradeColumns
    books: BookColumns
    # Frames that are neither: control messages and rejects (None), by frame index.
    others: list[tuple[int, ControlEvent | None]] = field(default_factory=list)
    # The rejected frames again, with their reject kind, by frame index.
    rejects: list[tuple[int, str]] = field(default_factory=list)

    def recode(self, codes: np.ndarray) -> FrameBatch:
        """The batch with symbol code ``c`` replaced by ``codes[c]``: frames decoded by one
        ``BatchDecoder`` (a replay worker's) handed to another."""
        t, b = self.trades, self.books
        t = TradeColumns(t.index, codes[t.code], *(getattr(t, f) for f in _TRADE_FIELDS[2:]))
        b = BookColumns(b.index, codes[b.code], *(getattr(b, f) for f in _BOOK_FIELDS[2:]))
        return FrameBatch(t, b, self.others, self.rejects)

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
        self.table = normalizer.table
        self.symbols: list[str] = self.table.names  # code -> canonical symbol
        self.code = self.table.code
        self._kinds: dict[str, int] = {}  # stream name -> kind (0: not for the fast path)

    # -- entry -----------------------------------------------------------------------------
    def decode(self, frames: Sequence[bytes]) -> FrameBatch:
        if not isinstance(frames, list):
            frames = list(frames)
        trades, books, rest = self.layouts(frames)
        parts = [_Part([_fields(trades, _TRADE_FIELDS)], [_fields(books, _BOOK_FIELDS)], [])]
        if rest:  # the frames no layout took: the general path, then their own indices
            rest_index = np.asarray(rest, dtype=np.int64)
            others: list[_Part] = []
            self._decode_into([frames[i] for i in rest], 0, others)
            for part in others:
                part.trades = [(rest_index[t[0]], *t[1:]) for t in part.trades]
                part.books = [(rest_index[b[0]], *b[1:]) for b in part.books]
                part.others = [(rest[i], ev) for i, ev in part.others]
                part.rejects = [(rest[i], kind) for i, kind in part.rejects]
            parts += others
        return _merge(parts)

    def layouts(self, frames: list[bytes]) -> tuple[TradeColumns, BookColumns, list[int]]:
        """The frames in Binance's exact byte layouts as columns, in one C pass
        (``quant_core/native/frames.c``), and the indices of the others, for the exact path."""
        n = len(frames)
        i64 = np.empty((15, n), np.int64)
        i32 = np.empty((2, n), np.int32)
        i8 = np.empty((2, n), np.int8)
        nt, nb, nr = native_frames.decode(frames, self.lookup_code, i64, i32, i8)
        trades = TradeColumns(
            i64[0, :nt], i32[0, :nt], i8[0, :nt], i64[1, :nt], i64[2, :nt], i64[3, :nt],
            i64[4, :nt], i64[5, :nt], i64[6, :nt], i8[1, :nt].view(bool),
        )  # fmt: skip
        books = BookColumns(i64[7, :nb], i32[1, :nb], *(i64[k, :nb] for k in range(8, 14)))
        return trades, books, i64[14, :nr].tolist()

    def lookup_code(self, raw_symbol: str) -> int:
        try:
            return self.table.lookup(raw_symbol)
        except Rejected:
            return -1

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
        part = _Part(trades, [books] if books is not None else [], [], [])
        if slow:
            slow.sort()
            extra = self._per_frame(frames, slow, offset)
            part.trades.extend(extra.trades)
            part.books.extend(extra.books)
            part.others = extra.others
            part.rejects = extra.rejects
        return part

    def _kind(self, stream: str | None) -> int:
        if not isinstance(stream, str):
            return 0
        kind = STREAM_KINDS.get(stream.partition("@")[2], 0)
        if len(self._kinds) < _CACHE_LIMIT:
            self._kinds[stream] = kind
        return kind

    def _symbol_codes(self, raw: Sequence) -> np.ndarray | None:
        cache = self.table.raw_codes
        try:
            return np.fromiter(map(cache.__getitem__, raw), dtype=np.int32, count=len(raw))
        except (KeyError, TypeError):
            pass
        for s in set(map(str, raw)) - cache.keys() if None not in raw else ():
            try:
                self.table.lookup(s)
            except Rejected:
                continue
        codes = [cache.get(s, -1) if isinstance(s, str) else -1 for s in raw]
        return np.array(codes, dtype=np.int32)

    def _trades(self, data: list[_AnyData | None], kind: int):
        if None in data:
            return None
        name = STREAM_NAMES[kind]
        # One C-level pass over the structs, then columns (a list comprehension per field
        # costs several times more).
        if kind == AGG:
            s, e, p, q, m, T, a, f, l = zip(*map(_AGG_FIELDS, data), strict=True)  # noqa: E741
        else:
            s, e, p, q, m, T, a = zip(*map(_TRADE_FIELDS_OF, data), strict=True)
            f = l = a  # noqa: E741
        if e.count(name) != len(e):
            return None
        if None in p or None in q or None in m:
            return None
        try:  # array() refuses None and str: a missing or mistyped field goes the exact way
            ts = int64_column(T)
            ids = int64_column(a)
            first = ids if f is a else int64_column(f)
            last = ids if l is a else int64_column(l)
        except (TypeError, OverflowError):
            return None
        codes = self._symbol_codes(s)
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
        s, e, b, bq, a, aq, u, t = zip(*map(_BOOK_FIELDS_OF, data), strict=True)
        if e.count(None) + e.count("bookTicker") != len(e):
            return None
        try:  # join() in scaled_texts refuses anything but str (a JSON number for the ask price)
            values, ok = scaled_texts(b + bq + a + aq)
            update_id = int64_column(u)
        except (TypeError, OverflowError):
            return None
        ts = int64_column([-1 if x is None else x for x in t] if None in t else t)
        codes = self._symbol_codes(s)
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
        rejects: list[tuple[int, str]] = []
        normalizer = self.normalizer
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
                if ev is None:
                    rejects.append((i + offset, normalizer.last_reject))
        trade_cols = []
        if trades:
            cols = self.trade_columns(trades, trade_index)
            trade_cols.append(tuple(getattr(cols, f) for f in _TRADE_FIELDS))
        return _Part(trade_cols, [_rows_to_columns(books, _BOOK_DTYPES)], others, rejects)


@dataclass
class _Part:
    trades: list[tuple[np.ndarray, ...]]
    books: list[tuple[np.ndarray, ...]]
    others: list[tuple[int, ControlEvent | None]]
    rejects: list[tuple[int, str]] = field(default_factory=list)


_TRADE_DTYPES = (np.int64, np.int32, np.int8, *(np.int64,) * 6, bool)
_BOOK_DTYPES = (np.int64, np.int32, *(np.int64,) * 6)


def _fields(columns: TradeColumns | BookColumns, names: tuple[str, ...]) -> tuple:
    return tuple(getattr(columns, name) for name in names)


def _rows_to_columns(rows: list[tuple], dtypes) -> tuple[np.ndarray, ...]:
    if not rows:
        return tuple(np.empty(0, dtype=d) for d in dtypes)
    columns = zip(*rows, strict=True)
    return tuple(np.array(col, dtype=d) for col, d in zip(columns, dtypes, strict=True))


def _merge(parts: list[_Part]) -> FrameBatch:
    trade_groups = [t for p in parts for t in p.trades]
    book_groups = [b for p in parts for b in p.books]
    others = sorted((o for p in parts for o in p.others), key=lambda pair: pair[0])
    rejects = sorted((r for p in parts for r in p.rejects), key=lambda pair: pair[0])
    return FrameBatch(
        TradeColumns(*_concat(trade_groups, _TRADE_DTYPES)),
        BookColumns(*_concat(book_groups, _BOOK_DTYPES)),
        others,
        rejects,
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


def int64_column(values: Sequence) -> np.ndarray:
    """Python ints -> int64; TypeError for anything not an int, OverflowError beyond int64."""
    return np.frombuffer(array("q", values), dtype=np.int64)
