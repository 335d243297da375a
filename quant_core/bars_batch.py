"""Batch 1m bars of many trades at once (a day of archive trades), fast and exact.

Same input, same bars, same errors for valid data as ``quant_core.bars.aggregate_trades``
(the reference, whose module docstring defines a bar), in a fraction of its time: numpy
segment reductions (``ufunc.reduceat``) over rows sorted by (symbol, minute, first trade id),
with no sort at all when the rows come sorted (an archive file does).

Exactness without floats or Int128 rows: each price x qty (two int64 < 2**63) is split into
four 32-bit limbs (see ``_limbs``); a limb summed over a bar stays below 2**64 for bars of
fewer than 2**31 trades, so the per-bar sums are exact in uint64. Only the per-bar values are
then joined into Int128 (polars) and rounded half-even once, as the reference does.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from quant_core.bars import (
    BARS_1M_VERSIONED,
    CLOSE_OFFSET_MS,
    DAY_MS,
    INTERVAL,
    INTERVAL_MS,
    half_even_expr,
)
from quant_core.decode import PRICE_SCALE
from quant_core.tables import PRICE, TS, decimal_from_scaled, scaled_int64

_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_INT64_MAX = 2**63 - 1
_MAX_BAR_TRADES = 2**31  # limb sums stay exact below this many trades in one bar


def aggregate_batch(trades: pa.Table) -> pa.Table:
    """Trades -> 1m bars, equal to ``aggregate_trades(trades)``.

    Columns as for ``aggregate_trades``; ``trade_id`` may be absent when ``first_trade_id``
    is there (an archive aggTrades table: ``first_trade_id``/``last_trade_id`` cover it).
    """
    rows, symbols, sources = _columns(trades)
    n = len(rows["key"])
    bars = _time_ordered_bars(rows) if n else None
    if bars is not None:  # one series in time and id order (an archive file): no row work
        return _bars(rows, symbols, sources, bars)
    if n:
        rows["start"] = minute_starts(rows.pop("ts"))
        order = _order(rows)
        if order is not None:
            rows = {name: values[order] for name, values in rows.items()}
        keep = _first_of_duplicates(rows)
        if keep is not None:
            rows = {name: values[keep] for name, values in rows.items()}
        if rows["source_code"].max() > 0:  # several sources: group by source within a minute
            order = np.lexsort((rows["source_code"], rows["start"], rows["symbol_code"]))
            rows = {name: values[order] for name, values in rows.items()}
    return _bars(rows, symbols, sources)


def _columns(trades: pa.Table) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    names = trades.column_names
    key_name = "first_trade_id" if "first_trade_id" in names else "trade_id"
    required = ("symbol", key_name, "price", "qty", "ts_event", "is_buyer_maker")
    missing = [c for c in required if c not in names]
    if missing:
        raise ValueError(f"trades lack column(s) {missing}; required: {list(required)}")
    key = _ids(trades, key_name, "trade_id")
    last = _ids(trades, "last_trade_id", key_name) if "last_trade_id" in names else key
    maker = trades["is_buyer_maker"]
    if maker.null_count:
        raise ValueError("trades have nulls in 'maker'")
    symbol_code, symbols = _codes(pc.cast(trades["symbol"], pa.string()), "symbol", upper=True)
    if "source" in names:
        sources = pc.fill_null(pc.cast(trades["source"], pa.string()), "binance")
        source_code, source_names = _codes(sources, "source")
    else:
        source_code, source_names = np.zeros(len(key), np.int32), np.array(["binance"], object)
    ts = _epoch_ms(trades["ts_event"])
    price = _scaled(trades["price"], "price")
    qty = _scaled(trades["qty"], "qty")
    if len(key) and (price.min() <= 0 or qty.min() <= 0):
        raise ValueError("trades have a non-positive price or qty")
    if (last < key).any():
        raise ValueError("trades have last_trade_id < first_trade_id")
    rows = {
        "symbol_code": symbol_code,
        "source_code": source_code,
        "ts": ts,
        "key": key,
        "last": last,
        "price": price,
        "qty": qty,
        "taker": ~pc.cast(maker, pa.bool_()).to_numpy(zero_copy_only=False),
    }
    return rows, symbols, source_names


_EXACT_FLOAT = 2**53


def minute_starts(ts: np.ndarray) -> np.ndarray:
    """Epoch ms -> the start of its minute (floor), like ``ts - ts % 60_000`` at a third of its
    cost: int64 division is slow in numpy, a float64 division is vectorised. Exact for |ts| <
    2**53: a multiple of 60,000 divides to an exact integer, and any other ts is at least
    1/60,000 away from one, far more than the quotient's rounding error."""
    if not len(ts) or max(-int(ts.min()), int(ts.max())) >= _EXACT_FLOAT:
        return ts - ts % INTERVAL_MS
    quotient = ts / float(INTERVAL_MS)
    np.floor(quotient, out=quotient)
    starts = quotient.astype(np.int64)
    starts *= INTERVAL_MS
    return starts


def _ids(trades: pa.Table, name: str, fallback: str) -> np.ndarray:
    column = pc.cast(trades[name], pa.int64())
    if column.null_count and fallback in trades.column_names and fallback != name:
        column = pc.coalesce(column, pc.cast(trades[fallback], pa.int64()))
    if column.null_count:
        raise ValueError(f"trades have nulls in {name!r}")
    return column.to_numpy()


def _codes(
    values: pa.ChunkedArray | pa.Array, name: str, upper: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Codes numbered in sorted order of the (upper-cased) values, and the values by code."""
    if values.null_count:
        raise ValueError(f"trades have nulls in {name!r}")
    if not len(values):
        return np.zeros(0, np.int32), np.array([], dtype=object)
    only = _single_value(values)
    if only is not None:  # one symbol (an archive file): no hashing of every row
        word = only.upper() if upper else only
        return np.zeros(len(values), np.int32), np.array([word], dtype=object)
    encoded = pc.dictionary_encode(values).combine_chunks()
    words = encoded.dictionary
    if upper:  # on the few distinct values, not on every row
        words = pc.utf8_upper(words)
    names = np.array(words.to_pylist(), dtype=object)
    unique, rank = np.unique(names, return_inverse=True)  # sorted; equal names share a code
    return rank.astype(np.int32)[encoded.indices.to_numpy()], unique


def _single_value(values: pa.ChunkedArray | pa.Array) -> str | None:
    """The value when every row holds the same string, else None (one vectorised compare,
    no copy of the column)."""
    if values.type != pa.string() or not len(values):
        return None
    first = values[0]
    return first.as_py() if pc.all(pc.equal(values, first)).as_py() else None


def _scaled(column: pa.ChunkedArray, name: str) -> np.ndarray:
    """int64 scaled by 10**8 as given; decimals and decimal strings through Decimal(38, 8)."""
    kind = column.type
    if column.null_count:
        raise ValueError(f"trades have nulls in {name!r}")
    if pa.types.is_integer(kind):
        return pc.cast(column, pa.int64()).to_numpy()
    if pa.types.is_decimal(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        try:
            exact = pc.cast(column, PRICE)
        except pa.ArrowInvalid as exc:
            raise ValueError(f"column {name!r} is not exact at 8 decimal places: {exc}") from exc
        return scaled_int64(exact)
    raise TypeError(
        f"column {name!r} has type {kind}: give decimal128, string, or int64 scaled by 10**8 "
        "(floats are refused: they are not exact)"
    )


def _epoch_ms(column: pa.ChunkedArray) -> np.ndarray:
    kind = column.type
    if not pa.types.is_timestamp(kind) or kind.tz is None:
        raise TypeError(f"column 'ts_event' has type {kind}: give a UTC (tz-aware) timestamp")
    if column.null_count:
        raise ValueError("trades have nulls in 'ts'")
    raw = pc.cast(column, pa.int64()).to_numpy()
    per_ms = {"s": None, "ms": 1, "us": 1000, "ns": 1_000_000}[kind.unit]
    if per_ms == 1:
        return raw
    return raw * 1000 if per_ms is None else raw // per_ms  # floor: stays in its minute


def _order(rows: dict[str, np.ndarray]) -> np.ndarray | None:
    """The stable order by (symbol, minute, key), or None when the rows already have it."""
    sym, start, key = rows["symbol_code"], rows["start"], rows["key"]
    if sym[-1] == sym[0] == 0 and len(sym) and not sym.any():
        step = start[1:] - start[:-1]  # one symbol: minutes and keys only
        if (step >= 0).all() and ((step > 0) | (key[1:] >= key[:-1])).all():
            return None
        return np.lexsort((key, start))
    same_sym = sym[1:] == sym[:-1]
    same_bar = same_sym & (start[1:] == start[:-1])
    ordered = (
        (sym[1:] >= sym[:-1]).all()
        and (same_sym <= (start[1:] >= start[:-1])).all()
        and (same_bar <= (key[1:] >= key[:-1])).all()
    )
    if ordered:
        return None
    return np.lexsort((key, start, sym))  # lexsort is stable: the first arrival stays first


def _time_ordered_bars(rows: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """(first row, open time) of each bar when the rows are one symbol and source with times
    non-decreasing and ids strictly increasing (so no repeats): the bars are runs of rows,
    found by a binary search per minute instead of a minute start per row. None otherwise."""
    ts, key = rows["ts"], rows["key"]
    if rows["symbol_code"].any() or rows["source_code"].any():
        return None
    if not (bool((ts[1:] >= ts[:-1]).all()) and bool((key[1:] > key[:-1]).all())):
        return None
    first, last = minute_starts(ts[[0, -1]])
    edges = np.arange(first, last + INTERVAL_MS, INTERVAL_MS, dtype=np.int64)
    starts = np.searchsorted(ts, edges, "left")
    used = np.append(starts[1:], len(ts)) > starts  # minutes without trades have no bar
    return starts[used], edges[used]


def _first_of_duplicates(rows: dict[str, np.ndarray]) -> np.ndarray | None:
    """Rows to keep when a (symbol, minute, key) repeats (sorted rows: repeats are adjacent)."""
    sym, start, key = rows["symbol_code"], rows["start"], rows["key"]
    repeat = (key[1:] == key[:-1]) & (start[1:] == start[:-1])
    if sym.any():
        repeat &= sym[1:] == sym[:-1]
    if not repeat.any():
        return None
    return np.flatnonzero(np.concatenate(([True], ~repeat)))


class _Chunk:
    """Reusable buffers for one chunk of rows: the work stays in cache and allocates once."""

    def __init__(self, size: int) -> None:
        u, i = np.uint64, np.int64
        self.pl, self.ph, self.ql, self.qh = (np.empty(size, u) for _ in range(4))
        self.t1, self.t2 = np.empty(size, u), np.empty(size, u)
        self.limbs = [np.empty(size, u) for _ in range(4)]
        self.i1 = np.empty(size, i)

    def limbs_of(self, price: np.ndarray, qty: np.ndarray) -> list[np.ndarray]:
        """price x qty as four uint64 limbs of 32 bits each (limb i weighs 2**(32 i)), each
        below 2**33, so a bar's sum of one limb is exact in uint64 (< 2**31 trades)."""
        m = len(price)
        pl_, ph, ql, qh, t1, t2 = (
            b[:m] for b in (self.pl, self.ph, self.ql, self.qh, self.t1, self.t2)
        )
        l0, l1, l2, l3 = (b[:m] for b in self.limbs)
        p, q = price.view(np.uint64), qty.view(np.uint64)
        np.bitwise_and(p, _M32, out=pl_)
        np.right_shift(p, _S32, out=ph)
        np.bitwise_and(q, _M32, out=ql)
        np.right_shift(q, _S32, out=qh)
        np.multiply(pl_, ql, out=t1)  # low x low < 2**64
        np.bitwise_and(t1, _M32, out=l0)
        np.right_shift(t1, _S32, out=l1)
        np.multiply(pl_, qh, out=t1)  # the two cross terms, each < 2**63
        np.multiply(ph, ql, out=t2)
        np.add(t1, t2, out=t1)
        np.bitwise_and(t1, _M32, out=t2)
        np.add(l1, t2, out=l1)
        np.right_shift(t1, _S32, out=l2)
        np.multiply(ph, qh, out=t1)  # high x high < 2**62
        np.bitwise_and(t1, _M32, out=t2)
        np.add(l2, t2, out=l2)
        np.right_shift(t1, _S32, out=l3)
        return [l0, l1, l2, l3]


CHUNK_ROWS = 1 << 16


def _bar_sums(
    price: np.ndarray, qty: np.ndarray, taker: np.ndarray, trades: np.ndarray, starts: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-bar sums and extremes, a chunk of rows at a time (a bar may span chunks: its
    partial results are added/compared into its slot). int64 sums must not overflow: the
    caller checks that bound first."""
    n, bars = len(price), len(starts)
    out = {f"{k}{i}": np.zeros(bars, np.uint64) for k in ("pq", "tb") for i in range(4)}
    for name in ("volume", "tb_volume", "trades"):
        out[name] = np.zeros(bars, np.int64)
    out["high"] = np.full(bars, np.iinfo(np.int64).min)
    out["low"] = np.full(bars, np.iinfo(np.int64).max)
    chunk = _Chunk(min(n, CHUNK_ROWS))
    for c0 in range(0, n, CHUNK_ROWS):
        c1 = min(n, c0 + CHUNK_ROWS)
        b0 = int(np.searchsorted(starts, c0, "right")) - 1
        b1 = int(np.searchsorted(starts, c1, "left"))
        seg = np.concatenate(([0], starts[b0 + 1 : b1] - c0))
        slot = slice(b0, b1)
        p, q, tk = price[c0:c1], qty[c0:c1], taker[c0:c1]
        for i, limb in enumerate(chunk.limbs_of(p, q)):
            out[f"pq{i}"][slot] += np.add.reduceat(limb, seg)
            np.multiply(limb, tk, out=limb)
            out[f"tb{i}"][slot] += np.add.reduceat(limb, seg)
        out["volume"][slot] += np.add.reduceat(q, seg)
        tq = chunk.i1[: c1 - c0]
        np.multiply(q, tk, out=tq)
        out["tb_volume"][slot] += np.add.reduceat(tq, seg)
        out["trades"][slot] += np.add.reduceat(trades[c0:c1], seg)
        np.maximum(out["high"][slot], np.maximum.reduceat(p, seg), out=out["high"][slot])
        np.minimum(out["low"][slot], np.minimum.reduceat(p, seg), out=out["low"][slot])
    return out


_I128 = pl.Int128


def _joined(prefix: str) -> pl.Expr:
    """Per-bar limb sums (columns prefix0..prefix3) -> the exact Int128 total."""
    return pl.sum_horizontal(
        pl.col(f"{prefix}{i}").cast(_I128) * pl.lit(2 ** (32 * i), _I128) for i in range(4)
    )


def _half_even(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    return half_even_expr(num, den).cast(pl.Int64, strict=True)


def _sum_int64(values: np.ndarray, starts: np.ndarray, name: str) -> np.ndarray:
    """Per-bar sums of non-negative int64, exact, or a ValueError when one exceeds int64."""
    if not len(values):
        return values
    lengths = np.diff(np.append(starts, len(values)))
    if int(values.max()) * int(lengths.max()) <= _INT64_MAX:
        return np.add.reduceat(values, starts)
    u = values.view(np.uint64)
    low = np.add.reduceat(u & _M32, starts)
    high = np.add.reduceat(u >> _S32, starts)
    totals = [int(lo) + (int(hi) << 32) for lo, hi in zip(low, high, strict=True)]
    if max(totals) > _INT64_MAX:
        raise ValueError(f"a bar's {name} is beyond int64 once scaled by 10**8")
    return np.array(totals, np.int64)


def _bars(
    rows: dict[str, np.ndarray],
    symbols: np.ndarray,
    sources: np.ndarray,
    runs: tuple[np.ndarray, np.ndarray] | None = None,
) -> pa.Table:
    """The bars of sorted, de-duplicated rows; ``runs``: each bar's first row and open time
    when known already (else from the rows' minute starts)."""
    sym, src = rows["symbol_code"], rows["source_code"]
    n = len(sym)
    if runs is not None:
        starts, open_ms = runs
    elif n:
        start = rows["start"]
        change = start[1:] != start[:-1]
        if sym.any():
            change |= sym[1:] != sym[:-1]
        if src.any():
            change |= src[1:] != src[:-1]
        starts = np.concatenate(([0], np.flatnonzero(change) + 1))
        open_ms = start[starts]
    else:
        starts = open_ms = np.zeros(0, np.int64)
    ends = np.append(starts[1:], n)[: len(starts)] - 1
    lengths = ends - starts + 1
    if len(lengths) and lengths.max() >= _MAX_BAR_TRADES:
        raise ValueError(f"a bar has {lengths.max()} trades; at most {_MAX_BAR_TRADES - 1}")
    price, qty, taker = rows["price"], rows["qty"], rows["taker"]
    trades = rows["last"] - rows["key"] + 1
    longest = int(lengths.max()) if n else 0
    for values, name in ((qty, "volume"), (trades, "trade_count")):
        if n and int(values.max()) * longest > _INT64_MAX:
            # Rare (a bar of more than ~92 billion units): sum exactly, or refuse like the
            # reference does when the total does not fit int64.
            _sum_int64(values, starts, name)
    sums = _bar_sums(price, qty, taker, trades, starts)
    scale = pl.lit(PRICE_SCALE, _I128)
    try:
        exact = pl.DataFrame(sums).select(
            quote=_half_even(_joined("pq"), scale),
            vwap=_half_even(_joined("pq"), pl.col("volume").cast(_I128)),
            tb_quote=_half_even(_joined("tb"), scale),
        )
    except pl.exceptions.InvalidOperationError:
        raise ValueError("a bar's quote volume is beyond int64 once scaled by 10**8") from None
    decimals = {
        "open": price[starts],
        "high": sums["high"],
        "low": sums["low"],
        "close": price[ends],
        "volume": sums["volume"],
        "quote_volume": exact["quote"].to_numpy(),
        "vwap": exact["vwap"].to_numpy(),
        "taker_buy_volume": sums["tb_volume"],
        "taker_buy_quote_volume": exact["tb_quote"].to_numpy(),
    }
    count = sums["trades"]
    columns = {
        "source": pa.array(sources[src[starts]], pa.string()),
        "symbol": pa.array(symbols[sym[starts]], pa.string()),
        "interval": pa.array([INTERVAL] * len(starts), pa.string()),
        "ts": pa.array(open_ms, pa.int64()).cast(TS),
        "ts_close": pa.array(open_ms + CLOSE_OFFSET_MS, pa.int64()).cast(TS),
        "session_date": pa.array((open_ms // DAY_MS).astype(np.int32), pa.int32()).cast(
            pa.date32()
        ),
        "session": pa.array(["continuous"] * len(starts), pa.string()),
        **{name: decimal_from_scaled(v, 8) for name, v in decimals.items()},
        "trade_count": pa.array(count, pa.int64()).cast(pa.uint64()),
        "adjustment": pa.array(["raw"] * len(starts), pa.string()),
        "adj_factor": pa.array(np.ones(len(starts)), pa.float64()),
        "version": pa.array(np.ones(len(starts), np.uint64), pa.uint64()),
    }
    return pa.table([columns[f.name] for f in BARS_1M_VERSIONED], schema=BARS_1M_VERSIONED)
