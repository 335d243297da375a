"""The option chain of an underlying as of a time: every contract of the last snapshot taken
at or before ``at`` (``options_quotes``, final versions)."""

from __future__ import annotations

from datetime import datetime

from quant_api.models import OptionsChain
from quant_core.contracts import OptionsQuote

SQL_SNAPSHOT = (
    "SELECT max(snapshot_ts) FROM options_quotes WHERE source = {source:String} "
    "AND underlying = {underlying:String} AND snapshot_ts <= {at:DateTime64(3, 'UTC')}"
)
SQL_CHAIN = (
    "SELECT o.source AS source, o.symbol AS occ_symbol, o.underlying AS underlying, "
    "o.expiry AS expiry, o.strike AS strike, toString(o.right) AS right, o.ts AS ts_event, "
    "o.bid_price AS bid_price, o.ask_price AS ask_price, o.bid_size AS bid_size, "
    "o.ask_size AS ask_size, o.last_price AS last_price, "
    "o.underlying_price AS underlying_price, o.implied_volatility AS implied_volatility, "
    "o.delta AS delta, o.gamma AS gamma, o.theta AS theta, o.vega AS vega, o.rho AS rho "
    "FROM options_quotes AS o FINAL WHERE o.source = {source:String} "
    "AND o.underlying = {underlying:String} AND o.snapshot_ts = {snap:DateTime64(3, 'UTC')} "
    "ORDER BY o.expiry, o.strike, o.right LIMIT {limit:UInt32}"
)


def snapshot_time(warehouse, source: str, underlying: str, at: datetime) -> datetime | None:
    rows = warehouse.query_arrow(
        SQL_SNAPSHOT, {"source": source, "underlying": underlying, "at": at}
    )
    value = rows.column(0)[0].as_py() if rows.num_rows else None
    # max() over no rows is the epoch, not NULL, in ClickHouse.
    return value if value is not None and value.timestamp() > 0 else None


def chain(warehouse, source: str, underlying: str, snap: datetime, limit: int) -> OptionsChain:
    params = {"source": source, "underlying": underlying, "snap": snap, "limit": limit + 1}
    rows = warehouse.query_arrow(SQL_CHAIN, params).to_pylist()
    quotes = [OptionsQuote.model_validate(row) for row in rows[:limit]]
    return OptionsChain(
        source=source,
        underlying=underlying,
        snapshot_ts=snap,
        truncated=len(rows) > limit,
        data=quotes,
    )
