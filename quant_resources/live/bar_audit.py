"""Do the stored live bars equal the bars of the stored trades?

For every minute of ``[since_ms, until_ms)`` (whole minutes that have ended), the final bar in
``bars_1m`` (source binance) must equal ``quant_core.bars.aggregate_trades`` over the final
trades of that minute in ``trades`` (the bar stream, aggTrade): a bar missing, a bar without
trades, or any differing value is listed with both rows. The ``live_bars_1m`` asset check and
the live tests use it.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from quant_core.bars import INTERVAL_MS, aggregate_trades
from quant_core.replay import BAR_VALUE_COLUMNS
from quant_core.tables import BARS_1M

BAR_SOURCE = "binance"


def minute_range(since_ms: int, until_ms: int) -> tuple[int, int]:
    """Whole minutes: from the minute holding ``since_ms`` to the last one ended by ``until_ms``."""
    return since_ms // INTERVAL_MS * INTERVAL_MS, until_ms // INTERVAL_MS * INTERVAL_MS


def bar_differences(
    warehouse, symbols: list[str], since_ms: int, until_ms: int, stream: str = "aggTrade"
) -> list[dict[str, Any]]:
    """Minutes of ``symbols`` in the range where the stored bar is not the trades' bar:
    ``{"symbol", "minute", "stored", "from_trades"}`` (a row is None when absent)."""
    lo, hi = minute_range(since_ms, until_ms)
    if hi <= lo or not symbols:
        return []
    params = {
        "src": BAR_SOURCE,
        "syms": [s.upper() for s in symbols],
        "st": stream,
        "lo": lo,
        "hi": hi,
    }
    trades = warehouse.query_arrow(
        "SELECT symbol, trade_id, first_trade_id, last_trade_id, price, qty, "
        "ts AS ts_event, is_buyer_maker FROM trades FINAL WHERE source = {src:String} "
        "AND stream = {st:String} AND symbol IN {syms:Array(String)} "
        "AND ts >= fromUnixTimestamp64Milli({lo:Int64}) "
        "AND ts < fromUnixTimestamp64Milli({hi:Int64})",
        params,
    )
    columns = ", ".join(f.name for f in BARS_1M)
    stored = warehouse.query_arrow(
        f"SELECT {columns} FROM bars_1m FINAL WHERE source = {{src:String}} "
        "AND interval = '1m' AND symbol IN {syms:Array(String)} "
        "AND ts >= fromUnixTimestamp64Milli({lo:Int64}) "
        "AND ts < fromUnixTimestamp64Milli({hi:Int64})",
        params,
    )
    expected = aggregate_trades(trades) if trades.num_rows else BARS_1M.empty_table()
    return _differences(_rows(stored), _rows(expected))


def _rows(table: pa.Table) -> dict[tuple[str, int], dict[str, Any]]:
    out = {}
    for row in table.select(BAR_VALUE_COLUMNS).to_pylist():
        minute = int(row["ts"].timestamp() * 1000)
        out[(row["symbol"], minute)] = {
            k: (v.isoformat() if hasattr(v, "isoformat") else str(v)) for k, v in row.items()
        }
    return out


def _differences(stored: dict, expected: dict) -> list[dict[str, Any]]:
    diffs = []
    for key in sorted(stored.keys() | expected.keys()):
        a, b = stored.get(key), expected.get(key)
        if a != b:
            diffs.append({"symbol": key[0], "minute": key[1], "stored": a, "from_trades": b})
    return diffs


def session_ranges(
    warehouse, manifests: list[dict[str, Any]], lateness_ms: int = 2000
) -> list[tuple[str, list[str], int, int]]:
    """(session id, symbols, since, until) to audit for session manifests (``session.json``):
    from the session's first stored trade to its stop (``stop_exchange_ms`` of a closed
    session) or, while it runs, to its latest stored trade minus the lateness. A session
    without stored trades, or recovered from a crash without a stop time, has nothing to
    audit (its open minutes were never written)."""
    out = []
    for doc in manifests:
        header = doc.get("header") or {}
        session_id, symbols = header.get("session_id"), header.get("symbols") or []
        if not session_id or not symbols:
            continue
        first, last, stored = warehouse.query_rows(
            "SELECT toUnixTimestamp64Milli(min(ts)), toUnixTimestamp64Milli(max(ts)), count() "
            "FROM trades WHERE session_id = {sid:String}",
            {"sid": session_id},
        )[0]
        footer = doc.get("footer")
        if footer is not None:
            until = footer.get("stop_exchange_ms")
        elif doc.get("state") == "open":
            until = None if last is None else last - lateness_ms
        else:
            until = None
        if stored and until is not None and until > first:
            out.append((session_id, [s.upper() for s in symbols], int(first), int(until)))
    return out
