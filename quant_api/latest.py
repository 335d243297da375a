"""The newest trade, book ticker, bar and book of one series: Redis first, ClickHouse second.

Redis holds what the live pipeline saw last (``quant_resources.latest_store``); a kind missing
there (no ``REDIS_URL``, key absent, or a value that is not a valid v1 contract) is read from
the warehouse tables. Each item says where it came from. The book has no table: Redis only.
"""

from __future__ import annotations

import logging

import pydantic
from starlette.concurrency import run_in_threadpool

from quant_api.backends import backend
from quant_api.bars import COLUMNS_1M
from quant_api.errors import ApiError
from quant_api.models import Latest, LatestBar, LatestBook, LatestBookTicker, LatestTrade
from quant_core.contracts import Bar, BookSnapshot, BookTicker, Trade
from quant_resources.latest_store import LatestStore, LatestStoreError

_log = logging.getLogger(__name__)
_SERIES = "source = {source:String} AND symbol = {symbol:String}"
SQL = {
    "trade": (
        "SELECT source, symbol, trade_id, price, qty, "
        "if(is_buyer_maker, 'sell', 'buy') AS taker_side, ts AS ts_event, "
        "toDateTime64(ts_init, 6, 'UTC') AS ts_init, first_trade_id, last_trade_id "
        f"FROM trades WHERE {_SERIES} ORDER BY ts DESC, trade_id DESC LIMIT 1"
    ),
    "book_ticker": (
        "SELECT source, symbol, update_id, bid_price, bid_qty, ask_price, ask_qty, "
        "toDateTime64(ts_init, 6, 'UTC') AS ts_init, ts AS ts_event "
        f"FROM quotes WHERE {_SERIES} ORDER BY ts DESC, update_id DESC LIMIT 1"
    ),
    "bar": (
        f"SELECT {COLUMNS_1M} FROM bars_1m AS b FINAL WHERE b.source = {{source:String}} "
        "AND b.symbol = {symbol:String} AND b.interval = '1m' ORDER BY b.ts DESC LIMIT 1"
    ),
}
ITEMS = {
    "trade": (Trade, LatestTrade),
    "book_ticker": (BookTicker, LatestBookTicker),
    "bar": (Bar, LatestBar),
    "book": (BookSnapshot, LatestBook),  # books2: what the Redis sink stores
}


def from_redis(store: LatestStore | None, source: str, symbol: str) -> dict[str, object]:
    """kind -> contract for every kind Redis holds a valid value of."""
    if store is None:
        return {}
    try:
        raw = store.get(source, symbol)
    except LatestStoreError as exc:
        _log.warning("latest values from the warehouse only: %s", exc)
        return {}
    return validated(raw, source, symbol)


def validated(raw: dict[str, bytes | None], source: str, symbol: str) -> dict[str, object]:
    """kind -> contract of the stored JSON (``LatestStore.get``) that is a valid v1 value of
    this series; the others are left out (logged)."""
    found = {}
    for kind, value in raw.items():
        if value is None:
            continue
        model = ITEMS[kind][0]
        try:
            item = model.model_validate_json(value)
        except pydantic.ValidationError as exc:
            _log.warning("ignoring redis %s of %s:%s: %s", kind, source, symbol, exc)
            continue
        if item.source == source and item.symbol == symbol:
            found[kind] = item
    return found


WAREHOUSE_KINDS = tuple(SQL)


def from_warehouse(warehouse, source: str, symbol: str, kinds: list[str]) -> dict[str, object]:
    """kind -> contract of the newest row of each of ``kinds`` the warehouse holds."""
    found = {}
    for kind in kinds:
        rows = warehouse.query_arrow(SQL[kind], {"source": source, "symbol": symbol})
        if rows.num_rows:
            found[kind] = ITEMS[kind][0].model_validate(rows.to_pylist()[0])
    return found


def missing_kinds(cached: dict) -> list[str]:
    """The kinds the warehouse holds that ``cached`` lacks (the book has no table)."""
    return [kind for kind in WAREHOUSE_KINDS if kind not in cached]


MEMO_SERIES = 4096  # bodies kept (one per series); past it the memo starts again empty


class LatestAnswers:
    """The answer of ``/v1/latest/{symbol}`` for one service (``state``: the application's,
    read at each request; tests replace its ``latest_store``). The route and the layer that
    answers before routing (``quant_api.latest_fast``) both call ``body``.

    The body is a pure function of the series and the four stored values, so the last body
    of each series is kept with the exact Redis bytes it was made of: while Redis returns the
    same bytes (a bar or a book changes once a minute or a burst, dashboards poll faster),
    an answer costs the MGET and a comparison instead of validating and serialising the
    contracts again. Only a body made wholly from valid Redis values is kept."""

    def __init__(self, state) -> None:
        self.state = state
        self.memo: dict[tuple[str, str], tuple[tuple, bytes]] = {}

    async def body(self, source: str, symbol: str) -> bytes:
        """The 200 body (v1 JSON); ApiError 404 when nothing at all is known of the series,
        BackendUnavailable when the warehouse is needed and fails."""
        raw = await self.from_redis(source, symbol)
        values, series = tuple(raw.values()), (source, symbol)
        kept = self.memo.get(series)
        if kept is not None and kept[0] == values:
            return kept[1]
        cached = validated(raw, source, symbol)
        missing = missing_kinds(cached)
        found = {}
        if missing:
            warehouse = self.state.warehouse
            with backend("warehouse", warehouse.display_url):
                found = await run_in_threadpool(from_warehouse, warehouse, source, symbol, missing)
        text = answer_json(source, symbol, cached, found)
        if text is None:
            raise ApiError(
                404, f"symbol={symbol!r} has no data from source={source!r}", "symbol", symbol
            )
        body = text.encode()
        if not missing and len(cached) == sum(value is not None for value in values):
            if len(self.memo) >= MEMO_SERIES:
                self.memo.clear()
            self.memo[series] = (values, body)
        return body

    async def from_redis(self, source: str, symbol: str) -> dict[str, bytes | None]:
        """As ``from_redis`` reads, without blocking the event loop; {} without Redis."""
        store = self.state.latest_store
        if store is None:
            return {}
        try:
            return await store.get_async(source, symbol)
        except LatestStoreError as exc:
            _log.warning("latest values from the warehouse only: %s", exc)
            return {}


def answer_json(source: str, symbol: str, cached: dict, found: dict) -> str | None:
    """The response body (v1 JSON, serialised once: the items were validated as they were
    read), or None when nothing at all is known of the series (a 404)."""
    answer = combine(source, symbol, cached, found)
    if not any((answer.trade, answer.book_ticker, answer.bar, answer.book)):
        return None
    return answer.model_dump_json(by_alias=True)


def combine(source: str, symbol: str, cached: dict, found: dict) -> Latest:
    items = {}
    for kind, (_, wrapper) in ITEMS.items():
        if kind in cached:
            items[kind] = wrapper(origin="redis", value=cached[kind])
        elif kind in found:
            items[kind] = wrapper(origin="clickhouse", value=found[kind])
    return Latest(source=source, symbol=symbol, **items)
