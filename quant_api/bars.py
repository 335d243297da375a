"""Bars from ``bars_1m``: 1-minute bars as stored, longer intervals rolled up in SQL.

A rolled-up bar covers the UTC bucket ``[ts_event, ts_event + interval)``: open is the first
1m bar's open, close the last one's close, high the max, low the min, volume, quote volume,
taker volumes and trade count the sums, and vwap = sum(vwap x volume) / sum(volume) over the
1m bars that have a vwap, truncated to 8 places (Decimal256 in between, so nothing rounds
before that). A page holds the bars whose ``ts_event`` lies in ``[start, end)`` (bucket
boundaries: ``start`` and ``end`` rounded up to the interval), oldest first; the cursor is the
next bucket to read, so pages never overlap or skip, whatever was written meanwhile.

Every value reaches ClickHouse as a bound parameter; the only SQL chosen per request is one of
the fixed bucket expressions below, picked by the validated interval.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa

from quant_api.errors import bad_request
from quant_core.contracts import Interval
from quant_core.tables import PRICE, TS

INTERVALS = (Interval.M1, Interval.M5, Interval.M15, Interval.H1, Interval.D1)
_BUCKET = {
    Interval.M5: "toIntervalMinute(5)",
    Interval.M15: "toIntervalMinute(15)",
    Interval.H1: "toIntervalHour(1)",
    Interval.D1: "toIntervalDay(1)",
}
_FILTER = (
    "b.source = {source:String} AND b.symbol = {symbol:String} AND b.interval = '1m' "
    "AND b.ts >= {lo:DateTime64(3, 'UTC')} AND b.ts < {hi:DateTime64(3, 'UTC')}"
)
COLUMNS_1M = (
    "b.source AS source, b.symbol AS symbol, b.interval AS interval, b.ts AS ts_event, "
    "b.ts_close AS ts_close, b.open AS open, b.high AS high, b.low AS low, b.close AS close, "
    "b.volume AS volume, nullIf(b.vwap, 0) AS vwap, b.trade_count AS trade_count, "
    "b.quote_volume AS quote_volume, b.taker_buy_volume AS taker_buy_volume, "
    "b.taker_buy_quote_volume AS taker_buy_quote_volume, nullIf(b.session, '') AS session, "
    "b.adjustment AS adjustment"
)
SQL_1M = (
    f"SELECT {COLUMNS_1M} FROM bars_1m AS b FINAL WHERE {_FILTER} "
    "ORDER BY b.ts LIMIT {limit:UInt32}"
)
SQL_ROLLUP = (
    "SELECT any(b.source) AS source, any(b.symbol) AS symbol, {interval:String} AS interval, "
    "toDateTime64(toStartOfInterval(b.ts, {bucket}, 'UTC'), 3, 'UTC') AS ts_event, "
    "ts_event + toIntervalMillisecond({span_ms:UInt64} - 1) AS ts_close, "
    "argMin(b.open, b.ts) AS open, max(b.high) AS high, min(b.low) AS low, "
    "argMax(b.close, b.ts) AS close, sum(b.volume) AS volume, "
    "if(sum(if(b.vwap > 0, b.volume, 0)) = 0, NULL, toDecimal128("
    "sum(if(b.vwap > 0, toDecimal256(b.vwap, 8) * b.volume, 0)) "
    "/ sum(if(b.vwap > 0, toDecimal256(b.volume, 8), 0)), 8)) AS vwap, "
    "sum(b.trade_count) AS trade_count, sum(b.quote_volume) AS quote_volume, "
    "sum(b.taker_buy_volume) AS taker_buy_volume, "
    "sum(b.taker_buy_quote_volume) AS taker_buy_quote_volume, "
    "if(min(b.session) = max(b.session), nullIf(min(b.session), ''), NULL) AS session, "
    f"any(b.adjustment) AS adjustment FROM bars_1m AS b FINAL WHERE {_FILTER} "
    "GROUP BY ts_event ORDER BY ts_event LIMIT {limit:UInt32}"
)
SQL_ANY = (
    "SELECT count() FROM (SELECT 1 FROM bars_1m AS b "
    "WHERE b.source = {source:String} AND b.symbol = {symbol:String} LIMIT 1)"
)
SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("symbol", pa.string()),
        ("interval", pa.string()),
        ("ts_event", TS),
        ("ts_close", TS),
        ("open", PRICE),
        ("high", PRICE),
        ("low", PRICE),
        ("close", PRICE),
        ("volume", PRICE),
        ("vwap", PRICE),
        ("trade_count", pa.uint64()),
        ("quote_volume", PRICE),
        ("taker_buy_volume", PRICE),
        ("taker_buy_quote_volume", PRICE),
        ("session", pa.string()),
        ("adjustment", pa.string()),
    ]
)


def _ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def _ceil(ms: int, step: int) -> int:
    return -(-ms // step) * step


def _at(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


@dataclass(frozen=True)
class BarsQuery:
    """One validated request: the series, the interval and the bucket range ``[lo, hi)``."""

    source: str
    symbol: str
    interval: Interval
    start: datetime
    end: datetime

    @property
    def step_ms(self) -> int:
        return int(self.interval.duration.total_seconds() * 1000)

    @property
    def lo_ms(self) -> int:
        return _ceil(_ms(self.start), self.step_ms)

    @property
    def hi_ms(self) -> int:
        return _ceil(_ms(self.end), self.step_ms)

    def fingerprint(self) -> str:
        text = f"{self.source}|{self.symbol}|{self.interval}|{_ms(self.start)}|{_ms(self.end)}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def cursor(self, next_ms: int) -> str:
        doc = {"v": 1, "q": self.fingerprint(), "next": next_ms}
        return base64.urlsafe_b64encode(orjson.dumps(doc)).decode().rstrip("=")

    def resume(self, cursor: str | None) -> int:
        """The first bucket of the page ``cursor`` points to (the range start without one)."""
        if cursor is None:
            return self.lo_ms
        why = "is not a cursor this service issued"
        try:
            doc = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            next_ms = doc["next"] if doc.get("v") == 1 else None
            query = doc.get("q")
        except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
            raise bad_request("cursor", cursor, why) from None
        if not isinstance(next_ms, int) or isinstance(next_ms, bool):
            raise bad_request("cursor", cursor, why)
        if query != self.fingerprint():
            raise bad_request(
                "cursor",
                cursor,
                "belongs to another query (same symbol, source, interval, start and end needed)",
            )
        if not self.lo_ms <= next_ms <= self.hi_ms or next_ms % self.step_ms:
            raise bad_request("cursor", cursor, why)
        return next_ms


class Page:
    """One page: its rows, the next page's cursor (None on the last page), and either the
    warehouse's Arrow stream when it is exactly this page (``arrow``: sent as it came, with
    the contract's schema message) or the rows cut to the page. ``table()`` decodes them, in
    the contract's column names and types, only when asked (JSON, Parquet)."""

    def __init__(self, rows: int, next_cursor: str | None, arrow=None, table=None) -> None:
        self.rows, self.next_cursor, self.arrow, self.decoded = rows, next_cursor, arrow, table

    def table(self) -> pa.Table:
        if self.decoded is None:
            self.decoded = pa.ipc.open_stream(self.arrow).read_all()
        return as_contract(self.decoded)


# Only the open time is read to count a page's rows (and place its cursor): only its
# buffers are decompressed.
_TS_ONLY = pa.ipc.IpcReadOptions(included_fields=[SCHEMA.get_field_index("ts_event")])


def fetch_page(warehouse, query: BarsQuery, limit: int, cursor: str | None) -> Page:
    lo = query.resume(cursor)
    params = {
        "source": query.source,
        "symbol": query.symbol,
        "lo": _at(lo),
        "hi": _at(query.hi_ms),
        "limit": limit + 1,  # one more tells whether another page follows
    }
    if query.interval is Interval.M1:
        sql = SQL_1M
    else:
        sql = SQL_ROLLUP.replace("{bucket}", _BUCKET[query.interval])
        params |= {"interval": query.interval.value, "span_ms": query.step_ms}
    if lo >= query.hi_ms:
        return Page(0, None, table=SCHEMA.empty_table())
    # ClickHouse's own Arrow stream. The last page is sent as these bytes (behind our schema
    # message), with no decoding into Python or encoding again: for a page of a
    # symbol-year, that was most of the service's time beyond the query.
    stream = warehouse.client.raw_query(sql, parameters=params, fmt="ArrowStream")
    times = pa.ipc.open_stream(stream, options=_TS_ONLY).read_all().column("ts_event")
    if len(times) > limit:
        table = pa.ipc.open_stream(stream).read_all().slice(0, limit)
        last = times[limit - 1].value  # ms since the epoch
        return Page(limit, query.cursor(last + query.step_ms), table=table)
    schema = pa.ipc.open_stream(stream).schema
    if _same_columns(schema):
        return Page(len(times), None, arrow=with_contract_schema(stream))
    return Page(len(times), None, table=pa.ipc.open_stream(stream).read_all())


def _same_columns(schema: pa.Schema) -> bool:
    """Names and types as the contract's (ClickHouse marks some fields not-null; the
    contract does not: the record batches are laid out alike either way)."""
    return [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in SCHEMA]


def as_contract(table: pa.Table) -> pa.Table:
    table = table.select(SCHEMA.names)
    return table if table.schema == SCHEMA else table.cast(SCHEMA)


def with_contract_schema(stream: bytes) -> bytes:
    """An Arrow IPC stream with its schema message replaced by the contract's; the record
    batches and the end marker are kept byte for byte. The schema message comes first, as
    ``0xFFFFFFFF``, its metadata length (int32, little-endian) and the metadata, no body."""
    if stream[:4] != b"\xff\xff\xff\xff":
        raise ValueError("not an Arrow IPC stream with continuation markers")
    first = 8 + int.from_bytes(stream[4:8], "little")
    return SCHEMA.serialize().to_pybytes() + stream[first:]


def series_exists(warehouse, source: str, symbol: str) -> bool:
    return bool(warehouse.scalar(SQL_ANY, {"source": source, "symbol": symbol}))
