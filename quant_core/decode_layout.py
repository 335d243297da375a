"""Bursts of frames in the exact byte layouts Binance sends -> columns, with no Python object per
frame.

The batch decoder's first step (``quant_core.decode.BatchDecoder``). Binance writes each stream
kind's frames with one key order and no whitespace, so a burst is read as a byte array with
numpy: a frame is taken here only when it is, byte for byte, one of the ``LAYOUTS`` below, with
every value in a form whose meaning is unambiguous (ints of plain digits without a leading zero,
decimals of plain digits with at most 8 places, symbols and stream names without escapes,
printable ASCII only) and inside the ranges the exact decoder accepts. Such a frame is valid JSON
and decodes to exactly the record ``Normalizer.decode`` returns; any other frame, good or bad, is
handed back to the exact path, which accepts or rejects it with the reason it always gave. Per-frame
work in Python (~1 us) is what kept the batch decoder at a fraction of a bare ``orjson.loads``.

A layout is its frame text with ``$type:column`` slots: ``int`` (JSON integer of 1-18 digits),
``dec`` (a decimal string's content, scaled by 10**8), ``sym`` (the symbol's string content),
``bool``, and ``prefix`` (the stream name before ``@``, which the decoder ignores). A slot without
a column is checked and dropped. A slot ends at the first byte of the text that follows it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# Stream kinds (``quant_core.decode`` uses them for its columns too).
AGG, TRADE, BOOK = 1, 2, 3
# The contracts turn ``T`` into a datetime, which stops at year 9999.
MAX_MS = 253_402_300_799_999

_SLOT = re.compile(r"\$(\w+)(?::(\w+))?")
_DOT = ord(".")
# The bytes that end slots. A frame is read only when it holds exactly as many as its layout's
# literals: then no slot holds one, and the n-th delimiter of the frame is the layout's n-th.
DELIMITERS = (b'"', b",", b"}", b"@")
_PAD = 16  # bytes around the burst, so an 8-byte word read near an edge stays inside
# Bytes are read as unaligned little-endian 8-byte words: the byte at the lowest address is the
# word's lowest byte. LOW[c] keeps a word's first c bytes, HIGH[c] its last c.
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
LOW = np.array([(1 << (8 * c)) - 1 for c in range(9)], dtype=np.uint64)
HIGH = np.array([((1 << (8 * c)) - 1) << (8 * (8 - c)) for c in range(9)], dtype=np.uint64)
_ZEROS = np.uint64(0x3030303030303030)  # "00000000"
_SIXES = np.uint64(0x0606060606060606)
_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0)


def _word(chunk: bytes) -> int:
    return int.from_bytes(chunk.ljust(8, b"\0"), "little")


@dataclass(frozen=True)
class Layout:
    kind: int  # AGG, TRADE or BOOK
    pieces: tuple  # literals as their number, slots as (type, column or None, terminator byte)
    sizes: tuple  # the length of each literal piece (0 for a slot)
    # Every 8-byte word of the literals: (literal number, offset in it, mask, expected word).
    words: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    delimiters: int  # how many delimiter bytes the literals hold


def _layout(kind: int, text: str) -> Layout:
    literals: list[bytes] = []
    slots: list[tuple] = []
    at = 0
    for match in _SLOT.finditer(text):
        literals.append(text[at : match.start()].encode())
        slots.append((match.group(1), match.group(2)))
        at = match.end()
    literals.append(text[at:].encode())
    pieces: list = []
    sizes: list[int] = []
    words: list[tuple] = []
    seen = 0
    for i, literal in enumerate(literals):
        assert literal, "a slot must be followed by text"
        words += [
            (i, o, LOW[min(8, len(literal) - o)], _word(literal[o : o + 8]))
            for o in range(0, len(literal), 8)
        ]
        pieces.append(i)
        sizes.append(len(literal))
        seen += sum(map(literal.count, DELIMITERS))
        if i < len(slots):
            # A slot ends at the first byte of the literal after it, a delimiter: the
            # delimiter numbered ``seen`` in the frame when no slot holds one.
            assert literals[i + 1][:1] in DELIMITERS
            pieces.append((*slots[i], seen))
            sizes.append(0)
    number, offset, mask, word = zip(*words, strict=True)
    columns = (
        np.array(number, dtype=np.int64),
        np.array(offset, dtype=np.int64),
        np.array(mask, dtype=np.uint64),
        np.array(word, dtype=np.uint64),
    )
    return Layout(kind, tuple(pieces), tuple(sizes), columns, seen)


_FRAME = '{"stream":"$prefix@%s","data":{%s}}'
LAYOUTS = (
    _layout(AGG, _FRAME % ("aggTrade", '"e":"aggTrade","E":$int,"s":"$sym:code","a":$int:trade_id,'
        '"p":"$dec:price","q":"$dec:qty","f":$int:first,"l":$int:last,"T":$int:ts,'
        '"m":$bool:maker,"M":$bool')),  # spot
    _layout(AGG, _FRAME % ("aggTrade", '"e":"aggTrade","E":$int,"a":$int:trade_id,"s":"$sym:code",'
        '"p":"$dec:price","q":"$dec:qty","f":$int:first,"l":$int:last,"T":$int:ts,'
        '"m":$bool:maker')),  # futures
    _layout(BOOK, _FRAME % ("bookTicker", '"u":$int:update_id,"s":"$sym:code","b":"$dec:bid",'
        '"B":"$dec:bid_qty","a":"$dec:ask","A":"$dec:ask_qty"')),  # spot
    _layout(BOOK, _FRAME % ("bookTicker", '"e":"bookTicker","u":$int:update_id,"s":"$sym:code",'
        '"b":"$dec:bid","B":"$dec:bid_qty","a":"$dec:ask","A":"$dec:ask_qty","T":$int:ts,'
        '"E":$int')),  # futures
    _layout(TRADE, _FRAME % ("trade", '"e":"trade","E":$int,"s":"$sym:code","t":$int:trade_id,'
        '"p":"$dec:price","q":"$dec:qty","T":$int:ts,"m":$bool:maker,"M":$bool')),
    _layout(TRADE, _FRAME % ("trade", '"e":"trade","E":$int,"s":"$sym:code","t":$int:trade_id,'
        '"p":"$dec:price","q":"$dec:qty","b":$int,"a":$int,"T":$int:ts,"m":$bool:maker,'
        '"M":$bool')),  # with the order ids Binance sent until 2025
)  # fmt: skip
# The stream name's first letter after "@" picks the layouts to try.
_FIRST_LETTER = {AGG: ord("a"), TRADE: ord("t"), BOOK: ord("b")}


@dataclass
class LayoutColumns:
    """What ``read_layouts`` took: per kind, (frame rows, columns by name); and the rows left
    to the exact path, in order."""

    taken: list[tuple[int, np.ndarray, dict[str, np.ndarray]]]
    rest: list[int]


class _Bytes:
    """The joined burst as bytes and as 8-byte words, with the checks a layout needs."""

    def __init__(self, joined: bytes) -> None:
        self.buf = np.frombuffer(joined, dtype=np.uint8)
        self.size = len(self.buf)
        self.words = np.ndarray((self.size - 7,), dtype="<u8", buffer=joined, strides=(1,))
        self._positions: dict[int, np.ndarray] = {}

    def next(self, byte: int, pos: np.ndarray) -> np.ndarray:
        """Position of the first ``byte`` at or after each ``pos`` (past the end when none)."""
        found = self._positions.get(byte)
        if found is None:
            found = np.flatnonzero(self.buf == byte)
            self._positions[byte] = found = np.append(found, self.size - _PAD)
        return found.take(np.searchsorted(found, pos), mode="clip")

    def word(self, pos: np.ndarray) -> np.ndarray:
        # Positions are never negative (the burst starts after _PAD bytes); a row already
        # refused may point past the end.
        return self.words[np.minimum(pos, self.size - 8)]

    def digits(self, word: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(all kept bytes are ASCII digits, their number); the other bytes count as '0'."""
        w = (word & keep) | (_ZEROS & ~keep)
        ok = ((w & _NIBBLES) == _ZEROS) & (((w + _SIXES) & _NIBBLES) == _ZEROS)
        w = w - _ZEROS  # one digit a byte, most significant first (lowest address)
        w = (w * np.uint64(10) + (w >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
        w = (w * np.uint64(100) + (w >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
        w = (w * np.uint64(10000) + (w >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
        return ok, w.astype(np.int64)

    def number(self, end: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The digits in ``[end - length, end)``, length 0-16: (all digits, value)."""
        low_ok, low = self.digits(self.word(end - 8), HIGH[np.clip(length, 0, 8)])
        high_ok, high = self.digits(self.word(end - 16), HIGH[np.clip(length - 8, 0, 8)])
        return low_ok & high_ok, high * 10**8 + low


def read_layouts(frames: Sequence[bytes], lookup: Callable[[str], int]) -> LayoutColumns | None:
    """Columns of the frames that match a layout; None when a frame is not bytes. ``lookup``
    gives a symbol's code, or -1 for a symbol the exact path rejects."""
    pad = b" " * _PAD
    try:
        joined = pad + b" ".join(frames) + pad
    except TypeError:
        return None
    n = len(frames)
    lengths = np.fromiter(map(len, frames), dtype=np.int64, count=n)
    starts = np.full(n, _PAD, dtype=np.int64)
    np.cumsum(lengths[:-1] + 1, out=starts[1:])
    starts[1:] += _PAD
    ends = starts + lengths
    data = _Bytes(joined)
    buf = data.buf
    # Printable ASCII without backslashes: no escapes, so string contents are their bytes.
    # (Comparisons: several times faster than a 256-entry lookup table over the burst.)
    odd = buf < 32
    odd |= buf > 126
    odd |= buf == 92
    plain = ~np.logical_or.reduceat(odd, starts) & (lengths > 12)
    delimiter = buf == DELIMITERS[0][0]
    for d in DELIMITERS[1:]:
        delimiter |= buf == d[0]
    # One more, in the padding after the burst: never empty, and counted in no frame.
    data.delimiters = delimiters = np.append(np.flatnonzero(delimiter), data.size - 1)
    first = np.searchsorted(delimiters, starts)
    count = np.searchsorted(delimiters, ends) - first
    # The letter after the stream name's "@" (the 4th delimiter of a frame in a layout).
    letter = buf[
        np.minimum(delimiters[np.minimum(first + 3, len(delimiters) - 1)] + 1, data.size - 1)
    ]
    left = np.ones(n, dtype=bool)
    taken = []
    for layout in LAYOUTS:
        match = left & plain & (count == layout.delimiters)
        rows = np.flatnonzero(match & (letter == _FIRST_LETTER[layout.kind]))
        if not len(rows):
            continue
        ok, columns = _read(data, layout, starts[rows], ends[rows], first[rows])
        columns["code"] = _symbol_codes(data, lookup, *columns["code"], ok)
        ok &= _in_range(layout.kind, columns)
        rows = rows[ok]
        if len(rows):
            left[rows] = False
            taken.append((layout.kind, rows, {k: v[ok] for k, v in columns.items()}))
    return LayoutColumns(taken, np.flatnonzero(left).tolist())


_TRUE, _FALSE = np.uint64(_word(b"true")), np.uint64(_word(b"false"))


def _read(data: _Bytes, layout: Layout, start: np.ndarray, end: np.ndarray, first: np.ndarray):
    pos = start
    ok = np.ones(len(pos), dtype=bool)
    columns: dict[str, object] = {}
    literal_starts = []
    for piece, size in zip(layout.pieces, layout.sizes, strict=True):
        if size:
            literal_starts.append(pos)
            pos = pos + size
            continue
        kind, name, ordinal = piece
        if kind == "bool":
            word = data.word(pos)
            true = (word & LOW[4]) == _TRUE
            ok &= true | ((word & LOW[5]) == _FALSE)
            value: object = true
            pos = pos + np.where(true, 4, 5)
        else:
            stop = data.delimiters[first + ordinal]
            length = stop - pos
            if kind == "int":
                digits, value = data.number(stop, length)
                ok &= digits & (length >= 1) & (length <= 16)
                ok &= (length == 1) | (data.buf[np.minimum(pos, data.size - 1)] != 48)
            elif kind == "dec":
                ok, value = _decimal(data, pos, stop, ok)
            elif kind == "sym":
                ok &= (length >= 1) & (length <= 24)
                value = (pos, length)
            else:  # prefix: the stream name up to the "@" (no delimiter in it)
                value = None
            pos = stop
        if name is not None:
            columns[name] = value
    ok &= pos == end
    # Every literal word of every frame in one gather.
    number, offset, mask, word = layout.words
    at = np.stack(literal_starts, axis=1)[:, number] + offset
    ok &= ((data.word(at) & mask) == word).all(axis=1)
    return ok, columns


def _decimal(data: _Bytes, start: np.ndarray, stop: np.ndarray, ok: np.ndarray):
    """Plain digits with an optional point and 1-8 places -> count of 10**-8 (1-8 digits
    before the point; more go the exact way)."""
    dot = data.next(_DOT, start)
    has = dot < stop
    whole_end = np.where(has, dot, stop)
    whole, places = whole_end - start, np.where(has, stop - dot - 1, 0)
    ok = ok & (whole >= 1) & (whole <= 8) & (places <= 8) & (~has | (places >= 1))
    whole_ok, value = data.digits(data.word(whole_end - 8), HIGH[np.clip(whole, 0, 8)])
    # The places, left-aligned in a word whose missing places read as '0': already * 10**-8.
    frac_ok, frac = data.digits(data.word(dot + 1), LOW[np.clip(places, 0, 8)])
    return ok & whole_ok & frac_ok, value * 10**8 + frac


def _symbol_codes(
    data: _Bytes,
    lookup: Callable[[str], int],
    start: np.ndarray,
    length: np.ndarray,
    ok: np.ndarray,
) -> np.ndarray:
    """Symbol codes by the one table (-1: a symbol the exact path rejects); unknown symbols are
    looked up once, in order of first appearance. A symbol is its bytes in 3 words, the bytes
    past its end zero (a plain frame has no NUL byte, so no two symbols share a key)."""
    length = np.where(ok, length, 0)
    words = [data.word(start + 8 * j) & LOW[np.clip(length - 8 * j, 0, 8)] for j in range(3)]
    keys = np.ascontiguousarray(np.stack(words, axis=1)).view("V24").ravel()
    unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    codes = np.full(len(unique), -1, dtype=np.int32)
    for u in np.argsort(first).tolist():
        raw = bytes(unique[u]).rstrip(b"\0").decode("ascii")
        if raw:
            codes[u] = lookup(raw)
    return codes[inverse.ravel()]


def _in_range(kind: int, c: dict[str, np.ndarray]) -> np.ndarray:
    """What ``Normalizer`` checks after typed decoding; a frame failing it goes the exact way."""
    ok = c["code"] >= 0
    if "ts" in c:
        ok &= c["ts"] <= MAX_MS
    if kind == BOOK:
        return ok & (c["bid"] > 0) & (c["ask"] > 0) & (c["bid"] <= c["ask"])
    ok &= (c["price"] > 0) & (c["qty"] > 0)
    if kind == AGG:
        ok &= c["first"] <= c["last"]
    return ok
