"""Binance REST ``/api/v3/aggTrades`` answers (gap repair) -> ``TradeEvent``s.

The answer is a JSON array of ``{"a","p","q","f","l","T","m","M"}`` objects, the same fields as
an ``aggTrade`` stream event minus ``e``/``E``/``s``: the symbol comes from the request, which the
session log keeps in the record's meta. Numbers are decoded exactly like the stream's
(``decode.scaled``), so a trade reaches the aggregator identically by either path.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Annotated, Any

import msgspec
import numpy as np
import orjson

from quant_core.decode import TradeEvent, int64_column, scaled

AGG_TRADES_PATH = "/api/v3/aggTrades"
HISTORICAL_TRADES_PATH = "/api/v3/historicalTrades"
_INT_FIELDS = ("a", "f", "l", "T")


class RestDecodeError(ValueError):
    """A REST body that is not an aggTrades answer; names the row and the field."""


def _rows(body: bytes, what: str) -> list:
    try:
        rows = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RestDecodeError(f"{what} body {body[:60]!r} is not JSON") from exc
    if not isinstance(rows, list):
        raise RestDecodeError(f"{what} body is not a JSON array: {str(rows)[:80]}")
    return rows


class _AggTradeRow(msgspec.Struct, gc=False):
    a: Annotated[int, msgspec.Meta(ge=0)]
    p: str
    q: str
    f: Annotated[int, msgspec.Meta(ge=0)]
    l: Annotated[int, msgspec.Meta(ge=0)]  # noqa: E741 - Binance's field name
    T: Annotated[int, msgspec.Meta(ge=0)]
    m: bool


_AGG_TRADE_ROWS = msgspec.json.Decoder(list[_AggTradeRow])
_AGG_TRADE_ROW_FIELDS = attrgetter("a", "f", "l", "p", "q", "T", "m")


def agg_trade_columns(body: bytes) -> tuple[np.ndarray, ...] | None:
    """The fast path of ``decode_agg_trades`` (a repair page is 1,000 trades; per-row Python
    cost ~30 us each made REST repair the live job's bottleneck once it fell behind): columns
    ``(trade_id, first, last, price, qty, ts, maker)`` when every row is in the plain form
    Binance sends (the same values ``decode_agg_trades`` gives), else None: the exact path then
    decodes it, or names what is wrong."""
    try:
        rows = _AGG_TRADE_ROWS.decode(body)
    except msgspec.MsgspecError:
        return None
    if not rows:
        return None
    a, f, l, p, q, t, m = zip(*map(_AGG_TRADE_ROW_FIELDS, rows), strict=True)  # noqa: E741
    n = len(rows)
    try:
        ids, first, last, ts = int64_column(a), int64_column(f), int64_column(l), int64_column(t)
        # scaled() per string beats the Arrow kernels of scaled_texts at a page's size.
        price = np.fromiter(map(scaled, p), np.int64, n)
        qty = np.fromiter(map(scaled, q), np.int64, n)
    except (OverflowError, ValueError):
        return None
    if not ((price > 0).all() and (qty > 0).all() and (first <= last).all()):
        return None
    return ids, first, last, price, qty, ts, np.array(m, dtype=bool)


def decode_agg_trades(body: bytes, symbol: str) -> list[TradeEvent]:
    rows = _rows(body, "aggTrades")
    symbol = symbol.upper()
    return [_trade(i, row, symbol) for i, row in enumerate(rows)]


def _trade(i: int, row: Any, symbol: str) -> TradeEvent:
    if not isinstance(row, dict):
        raise RestDecodeError(f"row {i}: {str(row)[:60]} is not an object")
    try:
        for name in _INT_FIELDS:
            value = row[name]
            if type(value) is not int or value < 0:
                raise RestDecodeError(f"row {i}: field {name!r}={value!r} is not an id/time")
        if type(row["m"]) is not bool:
            raise RestDecodeError(f"row {i}: field 'm'={row['m']!r} is not a boolean")
        price, qty = scaled(row["p"]), scaled(row["q"])
    except KeyError as exc:
        raise RestDecodeError(f"row {i}: field {exc.args[0]!r} is missing") from None
    if price <= 0 or qty <= 0:
        raise RestDecodeError(f"row {i}: price {row['p']!r} / qty {row['q']!r} is not a number")
    if row["f"] > row["l"]:
        raise RestDecodeError(f"row {i}: first trade id {row['f']} > last {row['l']}")
    return TradeEvent(
        symbol, "aggTrade", row["a"], row["f"], row["l"], price, qty, row["T"], row["m"]
    )


def decode_historical_trades(body: bytes, symbol: str) -> list[TradeEvent]:
    """``/api/v3/historicalTrades`` rows (``id, price, qty, time, isBuyerMaker``) -> trades."""
    rows = _rows(body, "historicalTrades")
    symbol = symbol.upper()
    events = []
    for i, row in enumerate(rows):
        try:
            ident, stamp, maker = row["id"], row["time"], row["isBuyerMaker"]
            price, qty = scaled(row["price"]), scaled(row["qty"])
        except (KeyError, TypeError) as exc:
            raise RestDecodeError(f"row {i}: field {exc.args[0]!r} is missing or invalid") from None
        if type(ident) is not int or type(stamp) is not int or type(maker) is not bool:
            raise RestDecodeError(f"row {i}: id/time/isBuyerMaker have the wrong types: {row}")
        if price <= 0 or qty <= 0:
            raise RestDecodeError(f"row {i}: price {row['price']!r} / qty {row['qty']!r}")
        events.append(TradeEvent(symbol, "trade", ident, ident, ident, price, qty, stamp, maker))
    return events


def decode_rest(path: str, body: bytes, symbol: str) -> list[TradeEvent]:
    """The trades of a recorded REST answer, by the endpoint that produced it (live and replay
    both call this, so a repair replays exactly as it was applied)."""
    if path == AGG_TRADES_PATH:
        return decode_agg_trades(body, symbol)
    if path == HISTORICAL_TRADES_PATH:
        return decode_historical_trades(body, symbol)
    raise RestDecodeError(f"path={path!r} is not a trade endpoint")
