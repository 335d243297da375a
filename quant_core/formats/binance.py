"""Binance spot/futures combined-stream frames and REST rows -> v1 contracts."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from quant_core.contracts import (
    AggressorSide,
    Bar,
    BookTicker,
    Interval,
    L2Update,
    PriceLevel,
    Session,
    Trade,
)

SOURCE = "binance"
KLINE_CLOSE_OFFSET_MS = 59_999


def ms_to_utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class FrameError(ValueError):
    """A frame that is not a Binance market-data event; the message names the field."""


def _taker(is_buyer_maker: bool) -> AggressorSide:
    # m=true: the buyer was the resting order, so the aggressor sold.
    return AggressorSide.SELL if is_buyer_maker else AggressorSide.BUY


def _levels(rows: list[list[str]]) -> tuple[PriceLevel, ...]:
    return tuple(PriceLevel(price=Decimal(p), qty=Decimal(q)) for p, q in rows)


def parse_event(
    data: dict[str, Any], stream: str = "", ts_init: datetime | None = None
) -> Trade | BookTicker | L2Update | Bar:
    """One stream payload (the ``data`` of a combined frame) -> its contract."""
    try:
        return _parse_event(data, stream, ts_init)
    except KeyError as exc:
        raise FrameError(f"field {exc.args[0]!r} is missing (stream={stream!r})") from exc
    except (InvalidOperation, TypeError) as exc:
        raise FrameError(f"a field of {str(data)[:120]!r} has the wrong type: {exc}") from exc


def _parse_event(
    data: dict[str, Any], stream: str, ts_init: datetime | None
) -> Trade | BookTicker | L2Update | Bar:
    kind = data.get("e")
    if kind is None and "u" in data and "b" in data and "a" in data:
        kind = "bookTicker"  # spot bookTicker carries no event type
    if kind == "aggTrade":
        return Trade(
            source=SOURCE,
            symbol=data["s"],
            trade_id=data["a"],
            first_trade_id=data["f"],
            last_trade_id=data["l"],
            price=Decimal(data["p"]),
            qty=Decimal(data["q"]),
            taker_side=_taker(data["m"]),
            ts_event=ms_to_utc(data["T"]),
            ts_init=ts_init,
        )
    if kind == "trade":
        return Trade(
            source=SOURCE,
            symbol=data["s"],
            trade_id=data["t"],
            price=Decimal(data["p"]),
            qty=Decimal(data["q"]),
            taker_side=_taker(data["m"]),
            ts_event=ms_to_utc(data["T"]),
            ts_init=ts_init,
        )
    if kind == "bookTicker":
        if ts_init is None:
            raise FrameError("bookTicker needs ts_init: spot frames carry no event time")
        return BookTicker(
            source=SOURCE,
            symbol=data["s"],
            update_id=data["u"],
            bid_price=Decimal(data["b"]),
            bid_qty=Decimal(data["B"]),
            ask_price=Decimal(data["a"]),
            ask_qty=Decimal(data["A"]),
            ts_event=ms_to_utc(data["T"]) if "T" in data else None,
            ts_init=ts_init,
        )
    if kind == "depthUpdate":
        return L2Update(
            source=SOURCE,
            symbol=data["s"],
            first_update_id=data["U"],
            last_update_id=data["u"],
            bids=_levels(data["b"]),
            asks=_levels(data["a"]),
            ts_event=ms_to_utc(data["E"]),
            ts_init=ts_init,
        )
    if kind == "kline":
        k = data["k"]
        return Bar(
            source=SOURCE,
            symbol=k["s"],
            interval=Interval(k["i"]),
            ts_event=ms_to_utc(k["t"]),
            ts_close=ms_to_utc(k["T"]),
            open=Decimal(k["o"]),
            high=Decimal(k["h"]),
            low=Decimal(k["l"]),
            close=Decimal(k["c"]),
            volume=Decimal(k["v"]),
            quote_volume=Decimal(k["q"]),
            trade_count=k["n"],
            taker_buy_volume=Decimal(k["V"]),
            taker_buy_quote_volume=Decimal(k["Q"]),
            session=Session.CONTINUOUS,
        )
    raise FrameError(f"e={kind!r} is not a supported event type (stream={stream!r})")


def parse_combined_frame(
    raw: bytes | str, ts_init: datetime | None = None
) -> Trade | BookTicker | L2Update | Bar:
    """A combined-stream frame ``{"stream": ..., "data": {...}}`` -> its contract."""
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"frame={raw[:80]!r} is not JSON") from exc
    if not isinstance(frame, dict) or "data" not in frame or "stream" not in frame:
        raise FrameError(
            f"frame={str(frame)[:80]!r} lacks the combined-stream 'stream'/'data' keys"
        )
    return parse_event(frame["data"], frame["stream"], ts_init)
