"""Alpaca market-data v2 JSON (stock bars, option bars, option snapshots) -> v1 contracts."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from quant_core.contracts import Bar, Interval, OccSymbol, OptionsQuote
from quant_core.formats.lean import MINUTE_CLOSE, NEW_YORK, equity_session

SOURCE = "alpaca"


_RFC3339 = re.compile(r"^(?P<head>[^.Zz+]+?)(?:\.(?P<frac>\d+))?(?P<zone>[Zz]|[+-]\d\d:\d\d)$")


def parse_time(text: str) -> datetime:
    """Alpaca's RFC 3339 timestamps (``Z`` or an offset, up to nanoseconds) -> aware datetime."""
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"t={text!r} is not an RFC 3339 timestamp with a zone")
    frac = f".{match['frac'][:6]}" if match["frac"] else ""
    zone = "+00:00" if match["zone"] in ("Z", "z") else match["zone"]
    return datetime.fromisoformat(match["head"] + frac + zone)


def parse_bar(symbol: str, row: dict[str, Any], source: str = SOURCE) -> Bar:
    start = parse_time(row["t"])
    return Bar(
        source=source,
        symbol=symbol,
        interval=Interval.M1,
        ts_event=start,
        ts_close=start + MINUTE_CLOSE,
        open=Decimal(str(row["o"])),
        high=Decimal(str(row["h"])),
        low=Decimal(str(row["l"])),
        close=Decimal(str(row["c"])),
        volume=Decimal(str(row["v"])),
        trade_count=row.get("n"),
        vwap=Decimal(str(row["vw"])) if row.get("vw") is not None else None,
        session=equity_session(start.astimezone(NEW_YORK)),
    )


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def parse_option_snapshot(
    occ_symbol: str, snap: dict[str, Any], source: str = SOURCE
) -> OptionsQuote:
    occ = OccSymbol(occ_symbol)
    quote = snap.get("latestQuote") or {}
    trade = snap.get("latestTrade") or {}
    greeks = snap.get("greeks") or {}
    stamp = quote.get("t") or trade.get("t")
    if stamp is None:
        raise ValueError(
            f"snapshot of occ_symbol={occ_symbol!r} has neither a quote nor a trade time"
        )
    return OptionsQuote(
        source=source,
        occ_symbol=occ_symbol,
        underlying=occ.root,
        expiry=occ.expiry,
        strike=occ.strike,
        right=occ.right,
        ts_event=parse_time(stamp),
        bid_price=_dec(quote.get("bp")),
        ask_price=_dec(quote.get("ap")),
        bid_size=_dec(quote.get("bs")),
        ask_size=_dec(quote.get("as")),
        last_price=_dec(trade.get("p")),
        implied_volatility=snap.get("impliedVolatility"),
        delta=greeks.get("delta"),
        gamma=greeks.get("gamma"),
        theta=greeks.get("theta"),
        vega=greeks.get("vega"),
        rho=greeks.get("rho"),
    )
