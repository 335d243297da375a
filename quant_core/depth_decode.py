"""Binance depth: diff frames (``<symbol>@depth@100ms`` / ``@depth``) and REST depth snapshot
answers (``GET /api/v3/depth``) -> exact columns, prices and quantities scaled by 10**8.

Numbers are read exactly like trades (``decode.scaled``): the 8-decimal strings Binance
sends go through the vectorised ``decode.scaled_texts``; any other form through
``scaled``, which takes exactly what it can represent and rejects the rest. A frame is decoded
with a typed msgspec decoder (the levels stay strings until the whole burst is scaled at
once); one that fails is looked at again with orjson to name the reject kind, the kinds of
``quant_core.decode``. Nothing here raises on a bad frame: it is counted in ``rejects`` and
left out. A rejected diff of a subscribed symbol leaves a hole in its update ids, which the
sync state machine (``depth_sync``) sees as a gap and answers with a resync.

A REST answer that cannot be trusted whole (a bad number, a level out of order or repeated,
a crossed top) raises ``DepthSnapshotError`` naming the kind and what was wrong: a book is
never built from part of a snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Annotated

import msgspec
import numpy as np
import orjson

from quant_core.decode import (
    BAD_FIELD,
    BAD_NUMBER,
    CROSSED_BOOK,
    MALFORMED_JSON,
    MAX_MS,
    MISSING_FIELD,
    UNKNOWN_STREAM,
    UNSUPPORTED_EVENT,
    Rejected,
    SymbolTable,
    scaled,
    scaled_texts,
)
from quant_core.native.book import read_diffs
from quant_core.native.book import read_levels as native_read_levels

DEPTH_PATH = "/api/v3/depth"
DEPTH_STREAMS = ("depth@100ms", "depth")  # our names `depth` and `depth1s`, in this order

_NonNeg = Annotated[int, msgspec.Meta(ge=0)]
_Ms = Annotated[int, msgspec.Meta(ge=0, le=MAX_MS)]
_Level = tuple[str, str]


class _DiffData(msgspec.Struct, gc=False):
    e: str
    E: _Ms
    s: str
    U: _NonNeg
    u: _NonNeg
    b: list[_Level]
    a: list[_Level]


class _DiffFrame(msgspec.Struct, gc=False):
    stream: str
    data: _DiffData


class _SnapshotBody(msgspec.Struct, gc=False):
    lastUpdateId: _NonNeg
    bids: list[_Level]
    asks: list[_Level]


class _RawSnapshotBody(msgspec.Struct, gc=False):
    lastUpdateId: _NonNeg
    bids: msgspec.Raw
    asks: msgspec.Raw


class _RawDiffData(msgspec.Struct, gc=False):
    e: str
    E: _Ms
    s: str
    U: _NonNeg
    u: _NonNeg
    b: msgspec.Raw
    a: msgspec.Raw


class _RawDiffFrame(msgspec.Struct, gc=False):
    stream: str
    data: _RawDiffData


_FRAME = msgspec.json.Decoder(_DiffFrame)
_RAW_FRAME = msgspec.json.Decoder(_RawDiffFrame)
_SNAPSHOT = msgspec.json.Decoder(_SnapshotBody)
_RAW_SNAPSHOT = msgspec.json.Decoder(_RawSnapshotBody)
_NUMERIC = {"E", "U", "u", "b", "a", "lastUpdateId", "bids", "asks"}
_FIELD_IN_ERROR = re.compile(r"`\$\.(?:data\.)?(\w+)")


@dataclass
class DepthBatch:
    """Diffs in frame order. Diff ``i`` of frame ``index[i]``, symbol ``symbols[code[i]]``,
    covers update ids ``first[i]`` (``U``) .. ``last[i]`` (``u``) at exchange time ``ts[i]``
    (``E``, epoch ms); its bid levels are ``price/qty[start[i]:mid[i]]``, its ask levels
    ``[mid[i]:start[i + 1]]``, in the order sent. Quantity 0 removes a level."""

    index: np.ndarray
    code: np.ndarray
    first: np.ndarray
    last: np.ndarray
    ts: np.ndarray
    start: np.ndarray
    mid: np.ndarray
    price: np.ndarray
    qty: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


@dataclass(frozen=True)
class DepthSnapshot:
    """A REST depth answer: levels best first, as scaled ints."""

    last_update_id: int
    bid_price: list[int]
    bid_qty: list[int]
    ask_price: list[int]
    ask_qty: list[int]


class DepthSnapshotError(ValueError):
    """A REST depth answer that cannot be used; ``kind`` is a ``quant_core.decode`` reject kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


@dataclass
class DepthDecoder:
    """Frames -> :class:`DepthBatch`. ``symbols`` (any case) restricts output to those symbols;
    ``rejects`` counts bad frames by kind, ``samples`` keeps the first raw frame of each kind.
    ``table`` numbers the symbols: pass the trade decoder's (``Normalizer.table``) so depth
    codes are the codes of the same symbols there."""

    symbols: Iterable[str] | None = None
    rejects: dict[str, int] = field(default_factory=dict)
    samples: dict[str, bytes] = field(default_factory=dict)
    table: SymbolTable | None = None

    def __post_init__(self) -> None:
        if self.table is None:
            self.table = SymbolTable(self.symbols)
        self.allowed = self.table.allowed
        self.names: list[str] = self.table.names  # code -> canonical symbol
        self.code = self.table.code

    def decode(self, frames: Sequence[bytes]) -> DepthBatch:
        """A burst of raw frames -> its usable diffs as columns; bad frames are counted.

        Three readers, each declining (None, nothing counted) what it cannot read exactly:
        ``read_diffs`` (C) takes a burst whose every frame is in Binance's exact layout, of a
        symbol already seen; ``_decode_fast`` types each frame with msgspec and reads the level
        arrays in C; ``decode_general`` reads anything and names every reject."""
        batch = self._decode_native(frames)
        if batch is None:
            batch = self._decode_fast(frames)
        return self.decode_general(frames) if batch is None else batch

    def _decode_native(self, frames: Sequence[bytes]) -> DepthBatch | None:
        read = read_diffs(frames, self.table.raw_codes, MAX_MS)
        if read is None:
            return None
        code, first, last, ts, counts, price, qty = (np.frombuffer(c, np.int64) for c in read)
        index = np.arange(len(frames), dtype=np.int64)
        return self._columns(frames, index, code, first, last, ts, counts, price, qty)

    def _decode_fast(self, frames: Sequence[bytes]) -> DepthBatch | None:
        """Each frame's levels kept as raw JSON and read for the whole burst at once by
        ``read_levels``; None (nothing counted) when a level array is not in Binance's exact
        form, and the general path decodes the burst, with the same result for the rest."""
        rejects: list[tuple[str, bytes, _RawDiffData | None]] = []
        diffs = self._diffs(frames, _RAW_FRAME, rejects)
        read = read_levels([raw for d in diffs[-1] for raw in (d.b, d.a)])
        # A frame refused after decoding (its symbol, event or ids) gets that reason only if
        # its levels would have decoded too: else the general path names them instead.
        refused = [raw for _, _, d in rejects if d is not None for raw in (d.b, d.a)]
        if read is None or (refused and read_levels(refused) is None):
            return None
        for kind, raw, _ in rejects:
            self._reject(kind, raw)
        counts, values = read
        return self._columns(frames, *diffs[:-1], counts, values[0::2], values[1::2])

    def decode_general(self, frames: Sequence[bytes]) -> DepthBatch:
        """Every frame typed by msgspec, its levels as strings (any exact decimal form): what
        ``decode`` falls back to, and the reference the tests hold the fast path to."""
        rejects: list[tuple[str, bytes, _DiffData | None]] = []
        diffs = self._diffs(frames, _FRAME, rejects)
        for kind, raw, _ in rejects:
            self._reject(kind, raw)
        counts = [len(levels) for d in diffs[-1] for levels in (d.b, d.a)]
        texts = [t for d in diffs[-1] for levels in (d.b, d.a) for level in levels for t in level]
        values = scaled_many(texts)
        return self._columns(frames, *diffs[:-1], counts, values[0::2], values[1::2])

    def _diffs(self, frames: Sequence[bytes], decoder: msgspec.json.Decoder, rejects: list):
        """Frame index, symbol code, U, u, E and the ``data`` of each usable diff frame; the
        others go to ``rejects`` as (kind, raw, their ``data`` if it decoded)."""
        index: list[int] = []
        codes: list[int] = []
        firsts: list[int] = []
        lasts: list[int] = []
        times: list[int] = []
        datas: list = []
        lookup = self.table.lookup
        for i, raw in enumerate(frames):
            data = None
            try:
                try:
                    d = decoder.decode(raw)
                except (msgspec.MsgspecError, TypeError, UnicodeDecodeError):
                    raise Rejected(_classify(raw)) from None
                data = d.data
                code = lookup(data.s)
                if data.e != "depthUpdate" or d.stream.partition("@")[2] not in DEPTH_STREAMS:
                    raise Rejected(UNSUPPORTED_EVENT if "@" in d.stream else UNKNOWN_STREAM)
                if data.u < data.U:
                    raise Rejected(BAD_NUMBER)
            except Rejected as rej:
                rejects.append((rej.kind, raw, data))
                continue
            index.append(i)
            codes.append(code)
            firsts.append(data.U)
            lasts.append(data.u)
            times.append(data.E)
            datas.append(data)
        return index, codes, firsts, lasts, times, datas

    def _columns(self, frames, index, codes, firsts, lasts, times, counts, price, qty):
        """``counts``: levels of each diff's bids, asks, bids, ...; ``price``, ``qty``: of
        every level in that order, -1 where not a number. -> :class:`DepthBatch`"""
        n = len(index)
        bounds = np.zeros(2 * n + 1, dtype=np.int64)
        np.cumsum(np.array(counts, dtype=np.int64), out=bounds[1:])
        # A diff with any price <= 0 or quantity < 0 (a sign, NaN, not a number) is dropped
        # whole: a level of it alone would be a book no exchange state ever had.
        bad_level = (price <= 0) | (qty < 0)
        keep = np.ones(n, dtype=bool)
        if bad_level.any():
            per_level = np.cumsum(bad_level)
            ends = np.concatenate(([0], per_level))[bounds[2::2]]
            starts = np.concatenate(([0], per_level))[bounds[0:-1:2]]
            keep = ends == starts
            for row in np.flatnonzero(~keep).tolist():
                self._reject(BAD_NUMBER, frames[index[row]])
        levels_kept = np.repeat(keep, np.diff(bounds[0::2]))
        if not keep.all():
            counts_arr = np.array(counts, dtype=np.int64).reshape(-1, 2)[keep].ravel()
            bounds = np.zeros(2 * int(keep.sum()) + 1, dtype=np.int64)
            np.cumsum(counts_arr, out=bounds[1:])
            price, qty = price[levels_kept], qty[levels_kept]

        def col(column: list[int]) -> np.ndarray:
            return np.array(column, dtype=np.int64)[keep]

        return DepthBatch(
            col(index),
            np.array(codes, dtype=np.int32)[keep],
            col(firsts),
            col(lasts),
            col(times),
            np.ascontiguousarray(bounds[0::2]),  # the book reads them in place
            np.ascontiguousarray(bounds[1::2]),
            np.ascontiguousarray(price),
            np.ascontiguousarray(qty),
        )

    def _reject(self, kind: str, raw: bytes) -> None:
        self.rejects[kind] = self.rejects.get(kind, 0) + 1
        if kind not in self.samples:
            self.samples[kind] = raw if isinstance(raw, bytes) else str(raw).encode()


def read_levels(arrays: list) -> tuple[np.ndarray, np.ndarray] | None:
    """Raw JSON level arrays (``[["93000.01000000","0.50000000"],...]``) -> (levels per
    array, price, qty, price, qty, ... as int64 counts of 10**-8), all arrays at once (in C);
    None unless every array is exactly in Binance's form: no whitespace, every number a
    string of 1 to 10 digits, a dot and 8 decimals. What it reads equals ``scaled`` of each
    string."""
    read = native_read_levels(arrays)
    if read is None:
        return None
    return np.frombuffer(read[0], np.int64), np.frombuffer(read[1], np.int64)


def scaled_many(texts: list[str]) -> np.ndarray:
    """Decimal strings -> int64 counts of 10**-8, -1 where a string is not an exact decimal
    (the vectorised path takes Binance's 8-decimal form, ``scaled`` any other)."""
    if not texts:
        return np.empty(0, dtype=np.int64)
    values, ok = scaled_texts(texts)
    if not ok.all():
        values = values.copy()
        for i in np.flatnonzero(~ok).tolist():
            try:
                values[i] = scaled(texts[i])
            except (ValueError, OverflowError):
                values[i] = -1  # too large for int64: no real price or quantity
    return values


def _classify(raw: bytes) -> str:
    """Why a frame failed typed decoding, as a ``quant_core.decode`` reject kind."""
    try:
        frame = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return MALFORMED_JSON
    if not isinstance(frame, dict):
        return MALFORMED_JSON
    stream = frame.get("stream")
    if not isinstance(stream, str) or "@" not in stream:
        return UNKNOWN_STREAM
    if stream.partition("@")[2] not in DEPTH_STREAMS:
        return UNSUPPORTED_EVENT
    data = frame.get("data")
    if not isinstance(data, dict):
        return MISSING_FIELD
    try:
        msgspec.convert(data, _DiffData)
    except msgspec.ValidationError as exc:
        return _kind_of(str(exc))
    return BAD_NUMBER  # typed decoding of the whole frame failed on a number (int64 overflow)


def _kind_of(message: str) -> str:
    if "missing required field" in message:
        return MISSING_FIELD
    match = _FIELD_IN_ERROR.search(message)
    name = match.group(1) if match else ""
    if name == "e":
        return UNSUPPORTED_EVENT
    return BAD_NUMBER if name in _NUMERIC else BAD_FIELD


def decode_depth_snapshot(body: bytes) -> DepthSnapshot:
    """A ``/api/v3/depth`` answer -> :class:`DepthSnapshot`, or ``DepthSnapshotError``.

    Bids must be strictly descending and asks strictly ascending (a repeated or misplaced
    level means the answer is not a book), every price and quantity a positive exact decimal,
    and the best bid below the best ask. A sound answer in Binance's exact form has its levels
    read in C; anything else (and every error message) comes from the general path."""
    fast = _snapshot_fast(body)
    return fast if fast is not None else decode_depth_snapshot_general(body)


def _snapshot_fast(body: bytes) -> DepthSnapshot | None:
    try:
        snap = _RAW_SNAPSHOT.decode(body)
    except (msgspec.MsgspecError, TypeError, UnicodeDecodeError):
        return None
    read = read_levels([snap.bids, snap.asks])
    if read is None:
        return None
    (n_bids, _), values = read
    price, qty = values[0::2], values[1::2]
    bid_p, ask_p = price[:n_bids], price[n_bids:]
    sound = (
        (price > 0).all()
        and (qty > 0).all()
        and (np.diff(bid_p) < 0).all()
        and (np.diff(ask_p) > 0).all()
        and not (n_bids and len(ask_p) and bid_p[0] >= ask_p[0])
    )
    if not sound:
        return None
    q = qty.tolist()
    return DepthSnapshot(snap.lastUpdateId, bid_p.tolist(), q[:n_bids], ask_p.tolist(), q[n_bids:])


def decode_depth_snapshot_general(body: bytes) -> DepthSnapshot:
    """``decode_depth_snapshot`` for any answer: every level typed as a string; what the C
    reader of Binance's form is held to."""
    try:
        snap = _SNAPSHOT.decode(body)
    except (msgspec.MsgspecError, TypeError, UnicodeDecodeError) as exc:
        try:
            orjson.loads(body)
        except (orjson.JSONDecodeError, TypeError):
            raise DepthSnapshotError(MALFORMED_JSON, f"body {bytes(body)[:60]!r}") from None
        raise DepthSnapshotError(_kind_of(str(exc)), str(exc)) from None
    sides = []
    for name, levels, sign in (("bids", snap.bids, -1), ("asks", snap.asks, 1)):
        values = scaled_many(list(chain.from_iterable(levels)))
        price, qty = values[0::2], values[1::2]
        bad = np.flatnonzero((price <= 0) | (qty <= 0))
        if len(bad):
            row = int(bad[0])
            raise DepthSnapshotError(BAD_NUMBER, f"{name}[{row}] = {list(levels[row])!r}")
        steps = np.flatnonzero(np.diff(price) * sign <= 0)
        if len(steps):
            row = int(steps[0]) + 1
            raise DepthSnapshotError(
                BAD_FIELD,
                f"{name}[{row}] price {levels[row][0]!r} is repeated or out of order after "
                f"{levels[row - 1][0]!r}",
            )
        sides.append((price.tolist(), qty.tolist()))
    (bid_p, bid_q), (ask_p, ask_q) = sides
    if bid_p and ask_p and bid_p[0] >= ask_p[0]:
        raise DepthSnapshotError(
            CROSSED_BOOK, f"best bid {snap.bids[0][0]!r} >= best ask {snap.asks[0][0]!r}"
        )
    return DepthSnapshot(snap.lastUpdateId, bid_p, bid_q, ask_p, ask_q)
