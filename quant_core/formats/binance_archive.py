"""Binance's public spot archive (daily and monthly zip files of CSV): names, layout, parsing.

Pure: callers hand in a function that opens the CSV member as a binary stream; nothing here
touches the network or the file system.

Layout (relative to the archive's base URL)::

    data/spot/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2024-08-08.zip(.CHECKSUM)
    data/spot/daily/trades/BTCUSDT/BTCUSDT-trades-2024-08-08.zip
    data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-08-08.zip
    data/spot/monthly/...  the same with YYYY-MM for a whole month

Parsing goes through ``pyarrow.csv`` with every column read as a string, then each column is
converted by Arrow compute: prices and sizes through ``decimal128(38, 8)`` (exact; a digit past
the 8th that is not zero is refused) into int64 counts of 10**-8 (``quant_core.decode``'s
units), never through floats. A row is never dropped: a bad row is an ``ArchiveFormatError``
naming the file, the line, the field and the value.

Time: spot files carry milliseconds until 2024-12-31 and microseconds from 2025-01-01. The unit
is read from the magnitude of the file's first timestamp (< 10**14: milliseconds) and then held
for the whole file, so a file mixing units fails on the first timestamp outside its day.
Every parsed table keeps exact times as ``timestamp[us, UTC]`` (a millisecond file is multiplied
by 1000, which is exact); the file's own unit is in the schema metadata ``time_unit``.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from quant_core.tables import PRICE, BeyondInt64, scaled_int64

KINDS = ("aggTrades", "trades", "klines")
KLINE_INTERVAL = "1m"
TIME = pa.timestamp("us", tz="UTC")
# Field metadata on price/size columns: int64 counting 10**-8 units.
SCALED = {b"scale": b"8"}
US_THRESHOLD = 10**14  # a timestamp at or above is in microseconds (10**14 ms is year 5138)
BLOCK_BYTES = 8 << 20  # CSV bytes parsed at a time: bounds memory for month files

# Column name -> how it is converted: "id" (int64), "dec" (scaled int64), "pos" (scaled int64,
# > 0), "time" (timestamp), "bool", "skip" (Binance's unused "ignore" column).
LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "aggTrades": (
        ("agg_trade_id", "id"),
        ("price", "pos"),
        ("qty", "pos"),
        ("first_trade_id", "id"),
        ("last_trade_id", "id"),
        ("ts_event", "time"),
        ("is_buyer_maker", "bool"),
        ("is_best_match", "bool"),
    ),
    "trades": (
        ("trade_id", "id"),
        ("price", "pos"),
        ("qty", "pos"),
        ("quote_qty", "dec"),
        ("ts_event", "time"),
        ("is_buyer_maker", "bool"),
        ("is_best_match", "bool"),
    ),
    "klines": (
        ("open_time", "time"),
        ("open", "pos"),
        ("high", "pos"),
        ("low", "pos"),
        ("close", "pos"),
        ("volume", "dec"),
        ("close_time", "time"),
        ("quote_volume", "dec"),
        ("trade_count", "id"),
        ("taker_buy_volume", "dec"),
        ("taker_buy_quote_volume", "dec"),
        ("ignore", "skip"),
    ),
}
_ARROW = {"id": pa.int64(), "dec": pa.int64(), "pos": pa.int64(), "time": TIME, "bool": pa.bool_()}
_PATTERNS = {
    "id": re.compile(r"^[0-9]{1,18}$").pattern,
    "dec": re.compile(r"^[0-9]{1,11}(\.[0-9]{0,8}0*)?$").pattern,
    "bool": re.compile(r"^(?i:true|false)$").pattern,
}
_PATTERNS["pos"] = _PATTERNS["dec"]
_PATTERNS["time"] = _PATTERNS["id"]
_MEANING = {
    "id": "is not a whole number",
    "time": "is not a whole number (a timestamp)",
    "dec": "is not a decimal number with at most 8 places",
    "pos": "is not a decimal number with at most 8 places",
    "bool": "is not True or False",
}
_INT64_MAX = 2**63 - 1


class ArchiveFormatError(ValueError):
    """A row the parser refuses; the message names the file, the line, the field and value."""

    def __init__(self, file: str, line: int | None, what: str, value: object, problem: str):
        where = f"{file} line {line}" if line is not None else file
        super().__init__(f"{where}: {what}={value!r}: {problem}")
        self.file, self.line, self.value = file, line, value


def schema(kind: str) -> pa.Schema:
    """The Arrow schema ``read_batches`` returns for ``kind`` (``symbol`` first)."""
    fields = [pa.field("symbol", pa.string())]
    for name, how in LAYOUTS[_check_kind(kind)]:
        if how != "skip":
            meta = SCALED if how in ("dec", "pos") else None
            fields.append(pa.field(name, _ARROW[how], nullable=False, metadata=meta))
    return pa.schema(fields)


@dataclass(frozen=True, order=True)
class Period:
    """A file's span: one UTC day, or one calendar month (``monthly``)."""

    start: date
    monthly: bool = False

    @classmethod
    def day(cls, day: date) -> Period:
        return cls(day)

    @classmethod
    def month(cls, year: int, month: int) -> Period:
        return cls(date(year, month, 1), monthly=True)

    @property
    def end(self) -> date:
        """The first day after the period."""
        if not self.monthly:
            return self.start + timedelta(days=1)
        days = calendar.monthrange(self.start.year, self.start.month)[1]
        return self.start + timedelta(days=days)

    @property
    def label(self) -> str:
        return self.start.strftime("%Y-%m") if self.monthly else self.start.isoformat()

    @property
    def frequency(self) -> str:
        return "monthly" if self.monthly else "daily"

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days)]

    def bounds_ms(self) -> tuple[int, int]:
        """[start, end) in epoch milliseconds."""
        return _epoch_ms(self.start), _epoch_ms(self.end)


def _epoch_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000


def _check_kind(kind: str) -> str:
    if kind not in LAYOUTS:
        raise ValueError(f"kind={kind!r} is not one of {list(KINDS)}")
    return kind


def _check_symbol(symbol: str) -> str:
    name = symbol.upper()
    if not name.isascii() or not name.isalnum() or not 2 <= len(name) <= 20:
        raise ValueError(f"symbol={symbol!r} is not an exchange symbol like BTCUSDT")
    return name


def file_name(kind: str, symbol: str, period: Period) -> str:
    """``BTCUSDT-aggTrades-2024-08-08.zip``; klines are 1m: ``BTCUSDT-1m-2024-08-08.zip``."""
    middle = KLINE_INTERVAL if _check_kind(kind) == "klines" else kind
    return f"{_check_symbol(symbol)}-{middle}-{period.label}.zip"


def archive_path(kind: str, symbol: str, period: Period) -> str:
    """The zip's path under the base URL; its checksum is this plus ``.CHECKSUM``."""
    folder = f"data/spot/{period.frequency}/{_check_kind(kind)}/{_check_symbol(symbol)}"
    if kind == "klines":
        folder += f"/{KLINE_INTERVAL}"
    return f"{folder}/{file_name(kind, symbol, period)}"


def member_name(zip_name: str) -> str:
    """The CSV inside a zip: the zip's name with ``.csv`` for ``.zip``."""
    return zip_name.removesuffix(".zip") + ".csv"


def parse_checksum(text: bytes, zip_name: str) -> str:
    """``<sha256 hex>  <file name>`` -> the hex digest; the name must be the zip's."""
    fields = text.decode("ascii", "replace").split()
    if len(fields) != 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", fields[0]):
        raise ArchiveFormatError(
            zip_name + ".CHECKSUM", 1, "content", text[:200], "not 'sha256 name'"
        )
    if fields[1] != zip_name:
        raise ArchiveFormatError(
            zip_name + ".CHECKSUM", 1, "file name", fields[1], f"expected {zip_name!r}"
        )
    return fields[0].lower()


# -- parsing -----------------------------------------------------------------------------------


def read_table(
    open_stream: Callable[[], BinaryIO], kind: str, symbol: str, period: Period, name: str
) -> pa.Table:
    """The whole CSV as one table of ``schema(kind)``."""
    batches = list(read_batches(open_stream, kind, symbol, period, name))
    if not batches:
        return schema(kind).empty_table()
    return pa.concat_tables(batches)


def read_batches(
    open_stream: Callable[[], BinaryIO],
    kind: str,
    symbol: str,
    period: Period,
    name: str,
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[pa.Table]:
    """Tables of ``schema(kind)``, about ``block_bytes`` of CSV each, in file order.

    ``open_stream`` opens the CSV from its start (called again only to find the line of a row
    with the wrong number of columns, which Arrow does not report). ``name`` is used in errors.
    Raises ``ArchiveFormatError`` at the first bad row, after yielding the batches before it:
    a caller that must write nothing partial collects first (``read_table``).
    """
    layout = LAYOUTS[_check_kind(kind)]
    symbol = _check_symbol(symbol)
    out_schema = schema(kind)
    stream = open_stream()
    try:
        header = _has_header(stream)
        names = [n for n, _ in layout]
        bad_rows: list[str] = []

        def invalid(row) -> str:
            bad_rows.append(row.text)
            return "error"

        options = (
            pacsv.ReadOptions(column_names=names, skip_rows=int(header), block_size=block_bytes),
            pacsv.ParseOptions(
                quote_char=False, ignore_empty_lines=False, invalid_row_handler=invalid
            ),
            pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        reader = None
        converter = _Converter(layout, period, name, first_line=1 + int(header))
        while True:
            try:
                # Opening parses the first block already: its errors are the same as the rest's.
                if reader is None:
                    reader = pacsv.open_csv(stream, *options)
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                if reader is None and "Empty CSV" in str(exc):
                    return  # no trades that day: a file without rows
                if bad_rows:
                    raise _column_count_error(open_stream, name, len(layout)) from exc
                raise ArchiveFormatError(name, None, "csv", str(exc)[:200], "unreadable") from exc
            columns = converter.convert(batch)
            meta = {b"time_unit": (converter.unit or "").encode()}
            yield _with_symbol(columns, symbol, out_schema.with_metadata(meta))
    finally:
        stream.close()


def _has_header(stream: BinaryIO) -> bool:
    """True when the first line starts with a letter (a header row; data rows start with a
    digit)."""
    if hasattr(stream, "peek"):
        head = stream.peek(1)[:1]
    else:
        position = stream.tell()
        head = stream.read(1)
        stream.seek(position)
    return head.isalpha()


def _with_symbol(columns: dict[str, pa.Array], symbol: str, out_schema: pa.Schema) -> pa.Table:
    n = len(next(iter(columns.values())))
    columns["symbol"] = pa.repeat(pa.scalar(symbol, pa.string()), n)
    return pa.table([columns[f.name] for f in out_schema], schema=out_schema)


def _column_count_error(open_stream: Callable[[], BinaryIO], name: str, expected: int):
    """Re-read the file to give the line number of the first row of the wrong width."""
    with open_stream() as stream:
        for number, raw in enumerate(stream, start=1):
            line = raw.rstrip(b"\r\n")
            if number == 1 and line[:1] and not line[:1].isdigit():
                continue  # the header
            got = line.count(b",") + 1
            if got != expected:
                text = line[:200].decode("utf-8", "replace")
                return ArchiveFormatError(
                    name, number, "row", text, f"has {got} columns, expected {expected}"
                )
    return ArchiveFormatError(name, None, "row", "?", f"a row does not have {expected} columns")


class _Converter:
    """String columns of one batch -> typed columns, checking every value; keeps the line
    count and the file's time unit from batch to batch."""

    def __init__(self, layout, period: Period, name: str, first_line: int) -> None:
        self.layout = layout
        self.name = name
        self.next_line = first_line
        self.unit: str | None = None
        self.lo_ms, self.hi_ms = period.bounds_ms()
        self.period = period

    def convert(self, batch: pa.RecordBatch) -> dict[str, pa.Array]:
        out: dict[str, pa.Array] = {}
        for name, how in self.layout:
            if how == "skip":
                continue
            column = batch.column(name)
            if how == "bool":
                out[name] = self._cast(column, name, how, pa.bool_())
            elif how == "id":
                out[name] = self._cast(column, name, how, pa.int64())
            elif how == "time":
                out[name] = self._time(column, name)
            else:
                out[name] = self._scaled(column, name, how)
        self.next_line += batch.num_rows
        return out

    def _fail(self, column: pa.Array, index: int, name: str, problem: str):
        raise ArchiveFormatError(
            self.name, self.next_line + index, name, column[index].as_py(), problem
        )

    def _cast(self, column: pa.Array, name: str, how: str, to: pa.DataType) -> pa.Array:
        try:
            return pc.cast(column, to)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            bad = pc.invert(pc.match_substring_regex(column, _PATTERNS[how]))
            index = _first_true(bad)
            self._fail(column, index if index is not None else 0, name, _MEANING[how])
            raise  # unreachable: _fail raises

    def _scaled(self, column: pa.Array, name: str, how: str) -> pa.Array:
        try:
            low = scaled_int64(self._cast(column, name, how, PRICE))
        except BeyondInt64 as exc:
            self._fail(column, exc.index, name, "is beyond int64 once scaled by 10**8")
        floor = 1 if how == "pos" else 0
        small = np.flatnonzero(low < floor)
        if small.size:
            self._fail(column, int(small[0]), name, "is not positive" if floor else "is negative")
        return pa.array(low, pa.int64())

    def _time(self, column: pa.Array, name: str) -> pa.Array:
        raw = self._cast(column, name, "time", pa.int64()).to_numpy()
        if self.unit is None and raw.size:
            self.unit = "us" if raw[0] >= US_THRESHOLD else "ms"
        per = 1000 if self.unit == "us" else 1
        outside = np.flatnonzero((raw < self.lo_ms * per) | (raw >= self.hi_ms * per))
        if outside.size:
            span = "month" if self.period.monthly else "day"
            self._fail(
                column,
                int(outside[0]),
                name,
                f"is outside the file's {span} {self.period.label} (UTC, in {self.unit})",
            )
        micros = raw if per == 1000 else raw * 1000
        return pa.array(micros, pa.int64()).cast(TIME)


def _first_true(mask: pa.Array) -> int | None:
    found = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    return int(found[0]) if found.size else None
