"""The Starlette app: Alpaca's market-data routes over the synthetic market, with auth, 422s,
fault injection and ``GET /_sim/stats``."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import orjson
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quant_dev.alpaca_sim import market
from quant_dev.alpaca_sim.faults import Draw, FaultPlan
from quant_dev.alpaca_sim.pages import (
    ADJUSTMENTS,
    DEFAULT_LIMIT,
    MAX_LIMIT,
    OPTION_FEEDS,
    STOCK_FEEDS,
    TIMEFRAMES,
    BadRequest,
    Page,
    Window,
    choice,
    object_page,
    parse_limit,
    parse_symbols,
    series_page,
)
from quant_resources.settings import sim_alpaca_credentials

SNAPSHOT_DEFAULT_LIMIT = 100
SNAPSHOT_MAX_LIMIT = 1_000
EXIT_DELAY_SECONDS = 0.2


@dataclass
class SimConfig:
    seed: int = 7
    now: datetime | None = None  # fixed clock; None: the real time
    faults: str = ""
    page_limit: int | None = None  # caps every page, to force pagination
    key_id: str = "test"
    secret: str = "test"

    @classmethod
    def from_env(cls, **kwargs) -> SimConfig:
        key, secret = sim_alpaca_credentials()
        return cls(key_id=key, secret=secret, **kwargs)

    def clock(self) -> datetime:
        return self.now or datetime.now(UTC)


@dataclass
class Stats:
    requests: int = 0
    pages: int = 0
    responses: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    gaps_after_429: list[float] = field(default_factory=list)
    badrows: list[dict] = field(default_factory=list)
    last_429: float | None = None

    def as_json(self) -> bytes:
        return orjson.dumps(
            {
                "requests": self.requests,
                "pages": self.pages,
                "responses": dict(self.responses),
                "faults": dict(self.faults),
                "gaps_after_429": self.gaps_after_429,
                "badrows": self.badrows,
            }
        )


def _json(status: int, payload: dict, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(payload), status, headers, media_type="application/json")


class _HangUp(Response):
    """Promises the whole body, sends half of it, then fails so the server drops the
    connection mid-body."""

    async def __call__(self, scope, receive, send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2]})
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        raise ConnectionAbortedError("simulated hang-up mid-body")


def _corrupt(page: Page, draw_index: int) -> dict | None:
    """Break one bar of the page (high < low, negative volume or NaN close)."""
    rows = [(i, name) for i, (name, value) in enumerate(page.items) if isinstance(value, list)]
    if not rows:
        return None
    item, symbol = rows[draw_index % len(rows)]
    runs = page.items[item][1]
    bars = [orjson.dumps(b) for b in orjson.loads(b"[" + b",".join(runs) + b"]")]
    page.items[item] = (symbol, bars)
    position = draw_index % len(bars)
    bar = orjson.loads(bars[position])
    kind = ("high<low", "negative volume", "NaN close")[draw_index % 3]
    if kind == "high<low":
        bar["h"], bar["l"] = bar["l"] - 0.01, bar["h"] + 0.01
    elif kind == "negative volume":
        bar["v"] = -abs(bar["v"]) - 1
    else:
        bar["c"] = "__nan__"
    bars[position] = orjson.dumps(bar).replace(b'"__nan__"', b"NaN")
    return {"symbol": symbol, "t": bar["t"], "kind": kind}


def create_app(config: SimConfig) -> Starlette:
    plan = FaultPlan(config.faults, config.seed)
    stats = Stats()
    state = {"dying": False}

    def cap(limit: int) -> int:
        return min(limit, config.page_limit) if config.page_limit else limit

    def api(handler: Callable[[Request], Page]):
        async def endpoint(request: Request) -> Response:
            now = time.monotonic()
            if state["dying"]:
                os._exit(3)  # killed mid-pagination: drop the connection, answer nothing
            stats.requests += 1
            if stats.last_429 is not None:
                stats.gaps_after_429.append(round(now - stats.last_429, 4))
                stats.last_429 = None
            response = await _answer(request, handler)
            stats.responses[str(response.status_code)] += 1
            if response.status_code == 429:
                stats.last_429 = time.monotonic()
            return response

        return endpoint

    async def _answer(request: Request, handler: Callable[[Request], Page]) -> Response:
        headers = request.headers
        key, secret = headers.get("apca-api-key-id"), headers.get("apca-api-secret-key")
        if key != config.key_id or not secret:
            return _json(401, {"message": "unauthorized."})
        if secret != config.secret:
            return _json(403, {"message": "forbidden"})
        draw: Draw = plan.draw()
        for name in draw.fired:
            stats.faults[name] += 1
        if draw.slow_seconds:
            await asyncio.sleep(draw.slow_seconds)
        if draw.status is not None:
            extra = {"Retry-After": str(draw.retry_after)} if draw.retry_after is not None else None
            return _json(draw.status, {"message": f"simulated {draw.status}"}, extra)
        try:
            page = handler(request)
        except BadRequest as exc:
            return _json(422, {"message": str(exc)})
        if draw.body == "badrow":
            broken = _corrupt(page, stats.requests)
            if broken is not None:
                stats.badrows.append(broken)
        body = page.render()
        if draw.body == "truncate":
            return Response(body[: len(body) // 2], 200, media_type="application/json")
        if draw.body == "hangup":
            return _HangUp(body, 200, media_type="application/json")
        stats.pages += 1
        task = None
        if plan.die_after_pages is not None and stats.pages >= plan.die_after_pages:
            state["dying"] = True
            task = BackgroundTask(_exit_soon)
        return Response(body, 200, media_type="application/json", background=task)

    def stock_bars(request: Request) -> Page:
        q = request.query_params
        symbols = parse_symbols(q.get("symbols"))
        interval = TIMEFRAMES.get(q.get("timeframe") or "")
        if interval is None:
            raise BadRequest(f"invalid timeframe: {q.get('timeframe')!r}")
        choice("adjustment", q.get("adjustment"), ADJUSTMENTS, "raw")
        choice("feed", q.get("feed"), STOCK_FEEDS, "sip")
        return _series(q, symbols, market.stock_day if interval == "1m" else market.stock_daily)

    def option_bars(request: Request) -> Page:
        q = request.query_params
        symbols = parse_symbols(q.get("symbols"))
        bad = [s for s in symbols if market.parse_occ(s) is None]
        if bad:
            raise BadRequest(f"invalid symbol: {bad[0]!r}")
        if TIMEFRAMES.get(q.get("timeframe") or "") != "1m":
            raise BadRequest(f"invalid timeframe: {q.get('timeframe')!r} (simulator: 1Min)")
        return _series(q, symbols, market.option_day)

    def _series(q, symbols: list[str], chunk) -> Page:
        if (q.get("sort") or "asc") != "asc":
            raise BadRequest("invalid sort: the simulator serves sort=asc only")
        limit = cap(parse_limit(q.get("limit"), DEFAULT_LIMIT, MAX_LIMIT))
        now = config.clock()
        window = Window.of(q, now)
        minute = chunk is not market.stock_daily
        end_ms = int(min(window.end.timestamp(), now.timestamp() - 60 * minute) * 1000)
        return series_page(
            "bars",
            symbols,
            window.days(),
            partial(_seeded, chunk),
            int(window.start.timestamp() * 1000),
            end_ms,
            q.get("page_token"),
            limit,
        )

    def _seeded(chunk, symbol, day):
        return chunk(config.seed, symbol, day)

    def latest_bars(request: Request) -> Page:
        q = request.query_params
        choice("feed", q.get("feed"), STOCK_FEEDS, "sip")
        page = Page("bars", paginated=False)
        for symbol in parse_symbols(q.get("symbols")):
            last = market.last_bar(config.seed, symbol, config.clock())
            if last is not None:
                page.items.append((symbol, last[1]))
        return page

    def option_chain(request: Request) -> Page:
        q = request.query_params
        choice("feed", q.get("feed"), OPTION_FEEDS, "indicative")
        limit = cap(parse_limit(q.get("limit"), SNAPSHOT_DEFAULT_LIMIT, SNAPSHOT_MAX_LIMIT))
        underlying = request.path_params["underlying"].upper()
        snap = market.chain(config.seed, underlying, config.clock())
        objects = _filter_chain(snap.objects if snap else {}, q)
        return object_page("snapshots", objects, q.get("page_token"), limit)

    async def sim_stats(request: Request) -> Response:
        return Response(stats.as_json(), media_type="application/json")

    return Starlette(
        routes=[
            Route("/v2/stocks/bars", api(stock_bars)),
            Route("/v2/stocks/bars/latest", api(latest_bars)),
            Route("/v1beta1/options/bars", api(option_bars)),
            Route("/v1beta1/options/snapshots/{underlying}", api(option_chain)),
            Route("/_sim/stats", sim_stats),
        ]
    )


def _filter_chain(objects: dict[str, bytes], q) -> dict[str, bytes]:
    kind = q.get("type")
    if kind not in (None, "", "call", "put"):
        raise BadRequest(f"invalid type: {kind!r}")
    try:
        low = float(q.get("strike_price_gte") or "-inf")
        high = float(q.get("strike_price_lte") or "inf")
    except ValueError:
        raise BadRequest("invalid strike price") from None
    exact = q.get("expiration_date")
    first = q.get("expiration_date_gte") or "0000-00-00"
    last = q.get("expiration_date_lte") or "9999-99-99"
    root = q.get("root_symbol")
    kept = {}
    for occ, obj in objects.items():
        c = market.parse_occ(occ)
        expiry = c.expiry.isoformat()
        if (
            (kind and c.is_call != (kind == "call"))
            or not low <= c.strike <= high
            or (exact and expiry != exact)
            or not first <= expiry <= last
            or (root and c.root != root)
        ):
            continue
        kept[occ] = obj
    return kept


async def _exit_soon() -> None:
    # Let the transport flush the page just served, then die without any cleanup.
    await asyncio.sleep(EXIT_DELAY_SECONDS)
    os._exit(3)
