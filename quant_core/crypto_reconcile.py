"""Archive tables -> warehouse rows, and the reconciliations of crypto history (no I/O).

* ``archive_trade_rows``: parsed ``aggTrades`` (quant_core.formats.binance_archive) -> rows of
  the ``trades`` table the live job writes. ``ts`` is DateTime64(3); the archive's
  microseconds (files from 2025-01-01) go to ``ts_sub_us`` (0..999), so the exact time is
  ``ts + ts_sub_us`` microseconds and nothing is lost. The archive has no receive time:
  ``ts_init`` is the event time, which keeps a re-run's rows identical.
* ``kline_rows``: parsed ``klines`` -> rows of ``binance_klines_1m``.
* ``kline_differences``: our 1m bars against the exchange's klines, every column, every minute.
* ``trade_differences``: live trades against archive trades by id, price, qty, time and side,
  within the span of ids live saw per symbol and day.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from quant_core.id_runs import IdRuns
from quant_core.tables import TS, decimal_from_scaled, scaled_int64

ARCHIVE_SOURCE = "binance_archive"
LIVE_SOURCE = "binance"
DAY_MS = 86_400_000
# Columns of a bar that a kline also has, compared minute by minute.
KLINE_COLUMNS = (
    "ts_close",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
    "taker_buy_volume",
    "taker_buy_quote_volume",
)
TRADE_COLUMNS = ("price", "qty", "ts", "is_buyer_maker")
DECIMALS = ("open", "high", "low", "close", "volume", "quote_volume")
DECIMAL_COLUMNS = (*DECIMALS, "taker_buy_volume", "taker_buy_quote_volume", "price", "qty")


def _micros(column: pa.ChunkedArray) -> np.ndarray:
    return pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy()


def _day(ms: np.ndarray) -> pa.Array:
    return pa.array((ms // DAY_MS).astype(np.int32), pa.int32()).cast(pa.date32())


def _same(value: str, n: int) -> pa.Array:
    """``value`` n times (built in Arrow, not from a Python list of n strings)."""
    return pa.repeat(pa.scalar(value, pa.string()), n)


def archive_trade_rows(agg: pa.Table, file: str, source: str = ARCHIVE_SOURCE) -> pa.Table:
    """``trades`` rows of one parsed aggTrades table; ``session_id`` names the archive file."""
    n = agg.num_rows
    us = _micros(agg["ts_event"])
    ms = us // 1000
    return pa.table(
        {
            "source": _same(source, n),
            "symbol": pc.cast(agg["symbol"], pa.string()),
            "stream": _same("aggTrade", n),
            "trade_id": pc.cast(agg["agg_trade_id"], pa.uint64()),
            "first_trade_id": pc.cast(agg["first_trade_id"], pa.uint64()),
            "last_trade_id": pc.cast(agg["last_trade_id"], pa.uint64()),
            "price": decimal_from_scaled(pc.cast(agg["price"], pa.int64()).to_numpy(), 8),
            "qty": decimal_from_scaled(pc.cast(agg["qty"], pa.int64()).to_numpy(), 8),
            "is_buyer_maker": pc.cast(agg["is_buyer_maker"], pa.bool_()),
            "ts": pa.array(ms, pa.int64()).cast(TS),
            "ts_sub_us": pa.array((us - ms * 1000).astype(np.uint16), pa.uint16()),
            "ts_init": pa.array(us * 1000, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
            "session_id": _same(file, n),
            "session_date": _day(ms),
            "origin": _same("archive", n),
        }
    )


def kline_rows(klines: pa.Table, source: str = ARCHIVE_SOURCE) -> pa.Table:
    """``binance_klines_1m`` rows of one parsed klines table (times floored to milliseconds:
    a minute's open is whole, its close is open + 59.999 s)."""
    n = klines.num_rows
    open_ms = _micros(klines["open_time"]) // 1000
    close_ms = _micros(klines["close_time"]) // 1000
    columns: dict[str, pa.Array] = {
        "source": _same(source, n),
        "symbol": pc.cast(klines["symbol"], pa.string()),
        "ts": pa.array(open_ms, pa.int64()).cast(TS),
        "ts_close": pa.array(close_ms, pa.int64()).cast(TS),
        "session_date": _day(open_ms),
    }
    for name in (*DECIMALS, "taker_buy_volume", "taker_buy_quote_volume"):
        columns[name] = decimal_from_scaled(pc.cast(klines[name], pa.int64()).to_numpy(), 8)
    columns["trade_count"] = pc.cast(klines["trade_count"], pa.uint64())
    order = [
        "source",
        "symbol",
        "ts",
        "ts_close",
        "session_date",
        *DECIMALS,
        "trade_count",
        "taker_buy_volume",
        "taker_buy_quote_volume",
    ]
    return pa.table({name: columns[name] for name in order})


def _comparable(table: pa.Table, names: tuple[str, ...], keys: tuple[str, ...]) -> pl.DataFrame:
    """Key and value columns as plain integers/strings/bools (decimals as exact scaled int64,
    times as epoch ms), so that equality is exact."""
    out: list[pl.Series] = []
    for name in (*keys, *names):
        column = table[name]
        if pa.types.is_decimal(column.type):
            values, kind = scaled_int64(pc.cast(column, pa.decimal128(38, 8))), pl.Int64
        elif pa.types.is_timestamp(column.type):
            values, kind = _micros(column) // 1000, pl.Int64
        elif pa.types.is_dictionary(column.type) or pa.types.is_string(column.type):
            values, kind = pc.cast(column, pa.string()).to_pylist(), pl.String
        elif pa.types.is_boolean(column.type):
            values, kind = column.to_numpy(zero_copy_only=False), pl.Boolean
        else:
            values, kind = pc.cast(column, pa.int64()).to_numpy(), pl.Int64
        out.append(pl.Series(name, values, dtype=kind))  # typed even when empty
    return pl.DataFrame(out)


@dataclass
class Differences:
    """What a reconciliation found: ``rows`` lists each differing key with both sides
    (``None`` for the side that lacks it); ``missing`` maps symbol -> ids only the reference
    has; ``extra`` maps symbol -> ids only the other side has."""

    compared: int
    rows: pl.DataFrame
    missing: dict[str, list[int]] = field(default_factory=dict)
    extra: dict[str, list[int]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return self.rows.height

    def records(self, limit: int = 20, scaled: tuple[str, ...] = DECIMAL_COLUMNS) -> list[dict]:
        """The first ``limit`` differing rows (both sides per row) as dicts of text; columns
        named in ``scaled`` (with their side suffix) shown as decimals, an absent side empty."""
        shown = self.rows.head(limit)
        decimal = [c.rsplit("_", 1)[0] in scaled for c in shown.columns]
        return [
            {
                c: "" if v is None else decimal_text(v) if d else str(v)
                for c, v, d in zip(shown.columns, row, decimal, strict=True)
            }
            for row in shown.iter_rows()
        ]


def decimal_text(scaled: int) -> str:
    """A count of 10**-8 as its exact decimal text."""
    return str(Decimal(scaled).scaleb(-8).normalize())


def _differences(
    ours: pl.DataFrame, theirs: pl.DataFrame, keys: list[str], names: tuple[str, ...]
) -> pl.DataFrame:
    """Full outer join on ``keys``; rows where a side is absent or any of ``names`` differs,
    with both sides' values (``_ours`` / ``_theirs``)."""
    left = ours.with_columns(pl.lit(True).alias("_in_ours")).rename({n: f"{n}_ours" for n in names})
    right = theirs.with_columns(pl.lit(True).alias("_in_theirs")).rename(
        {n: f"{n}_theirs" for n in names}
    )
    joined = left.join(right, on=keys, how="full", coalesce=True)
    differs = pl.col("_in_ours").is_null() | pl.col("_in_theirs").is_null()
    for name in names:
        differs = differs | (pl.col(f"{name}_ours") != pl.col(f"{name}_theirs"))
    picked = [c for n in names for c in (f"{n}_ours", f"{n}_theirs")]
    return joined.filter(differs).select([*keys, *picked]).sort(keys)


def kline_differences(bars: pa.Table, klines: pa.Table) -> Differences:
    """Minutes where our bars and the exchange's klines differ in any of ``KLINE_COLUMNS``,
    or where one side has a minute the other lacks. A kline of no trades (the archive lists
    quiet minutes) is no minute: bars exist only for minutes that traded."""
    klines = klines.filter(pc.greater(klines["trade_count"], 0))
    keys = ("symbol", "ts")
    ours = _comparable(bars, KLINE_COLUMNS, keys)
    theirs = _comparable(klines, KLINE_COLUMNS, keys)
    rows = _differences(ours, theirs, list(keys), KLINE_COLUMNS)
    rows = rows.rename(
        {c: c.replace("_ours", "_bar").replace("_theirs", "_kline") for c in rows.columns}
    )
    return Differences(compared=max(ours.height, theirs.height), rows=rows)


def trade_differences(live: pa.Table, archive: pa.Table) -> Differences:
    """Live aggTrades against the archive's, per symbol and UTC day, inside the span of ids
    live stored that day (before and after it, live simply was not running): an archive id
    live lacks is ``missing`` (live lost it), a live id the archive lacks is ``extra``, and
    both present with another price, qty, time (ms) or side is a difference."""
    keys = ("symbol", "trade_id")
    ours = _comparable(live, TRADE_COLUMNS, keys)
    theirs = _comparable(archive, TRADE_COLUMNS, keys)
    if not ours.height:
        return Differences(
            compared=0, rows=_differences(ours, theirs.head(0), list(keys), TRADE_COLUMNS)
        )
    day = (pl.col("ts") // DAY_MS).alias("day")
    spans = (
        ours.with_columns(day)
        .group_by("symbol", "day")
        .agg(lo=pl.col("trade_id").min(), hi=pl.col("trade_id").max())
    )
    theirs = (
        theirs.with_columns(day)
        .join(spans, on=["symbol", "day"], how="inner")
        .filter(pl.col("trade_id").is_between(pl.col("lo"), pl.col("hi")))
        .drop("day", "lo", "hi")
    )
    rows = _differences(ours, theirs, list(keys), TRADE_COLUMNS)
    rows = rows.rename(
        {c: c.replace("_ours", "_live").replace("_theirs", "_archive") for c in rows.columns}
    )
    missing = rows.filter(pl.col("price_live").is_null())
    extra = rows.filter(pl.col("price_archive").is_null())
    return Differences(
        compared=theirs.height,
        rows=rows,
        missing=_ids_by_symbol(missing),
        extra=_ids_by_symbol(extra),
    )


def _ids_by_symbol(rows: pl.DataFrame) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for symbol, ident in rows.select("symbol", "trade_id").iter_rows():
        found.setdefault(symbol, []).append(int(ident))
    return found


def id_runs_text(ids: Mapping[str, list[int]], limit: int = 50) -> str:
    """``SYMBOL: 5, 7-9`` per symbol: consecutive ids folded into ranges, at most ``limit``."""
    parts = []
    for symbol, values in sorted(ids.items()):
        runs = IdRuns(values)
        text = [
            f"{lo}" if lo == hi else f"{lo}-{hi}"
            for lo, hi in zip(runs.lo[:limit].tolist(), runs.hi[:limit].tolist(), strict=True)
        ]
        more = f", ... ({len(runs.lo)} runs)" if len(runs.lo) > limit else ""
        parts.append(f"{symbol}: {', '.join(text)}{more}")
    return "; ".join(parts)
