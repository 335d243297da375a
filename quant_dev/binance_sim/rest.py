"""Binance ``/api/v3`` market-data endpoints over the simulator's stored trades, Binance's
request-weight limit, and the ``/_sim`` control endpoints tests use."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from quant_core.depth_sync import depth_weight
from quant_dev.binance_sim import clock, faults, klines
from quant_dev.binance_sim.depth import DEPTH_PATH
from quant_dev.binance_sim.market import SymbolMarket, fmt8, round_half_even_8
from quant_dev.binance_sim.wire import Request

if TYPE_CHECKING:
    from quant_dev.binance_sim.server import Simulator

# Binance's documented request weights (spot, IP based).
WEIGHTS = {
    "/api/v3/ping": 1,
    "/api/v3/time": 1,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/aggTrades": 4,
    "/api/v3/trades": 25,
    "/api/v3/historicalTrades": 25,
    "/api/v3/klines": 2,
}

Reply = tuple[int, Any, dict[str, str]]


class ApiError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


class WeightLimiter:
    """Request weight per client IP in the current wall-clock minute, as Binance counts it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used: dict[str, tuple[int, int]] = {}  # ip -> (minute, weight)

    def charge(self, ip: str, weight: int, now: float) -> tuple[int, bool]:
        minute = int(now // 60)
        start, used = self.used.get(ip, (minute, 0))
        used = (used if start == minute else 0) + weight
        self.used[ip] = (minute, used)
        return used, used > self.limit


def int_param(q: dict[str, str], name: str, default: int | None = None) -> int | None:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 20:
        raise ApiError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.",
        )
    return int(raw)


def limit_param(q: dict[str, str], default: int, top: int) -> int:
    limit = int_param(q, "limit", default)
    assert limit is not None
    if limit < 1:
        raise ApiError(
            -1100, f"Illegal characters found in parameter 'limit'; legal range is '1..{top}'."
        )
    return min(limit, top)  # Binance serves at most `top`, it does not refuse more


def _symbol(sim: Simulator, q: dict[str, str]) -> SymbolMarket:
    name = q.get("symbol", "")
    if not name:
        raise ApiError(
            -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
        )
    market = sim.market.get(name) if name.isupper() else None
    if market is None:
        raise ApiError(-1121, "Invalid symbol.")
    return market


def agg_trades(sim: Simulator, q: dict[str, str]) -> list[dict]:
    m = _symbol(sim, q)
    limit = limit_param(q, 500, 1000)
    from_id, start, end = int_param(q, "fromId"), int_param(q, "startTime"), int_param(q, "endTime")
    if from_id is not None:
        lo = max(from_id, m.first_agg_id)  # older ids left the ring: serve from the oldest
    elif start is not None:
        lo = m.agg_ids_from_time(start)
    elif end is not None:  # the most recent up to endTime
        lo = m.agg_ids_from_time(end + 1) - limit
    else:
        lo = m.next_agg_id - limit
    rows = m.aggs(lo, lo + limit + len(sim.lost.get(m.spec.symbol.upper(), ())))
    found = [
        {"a": a, "p": fmt8(p), "q": fmt8(qty), "f": f, "l": last, "T": t, "m": mk, "M": True}
        for a, p, qty, f, last, t, mk in rows
        if (start is None or t >= start) and (end is None or t <= end)
    ]
    return sim.without_lost(m.spec.symbol, found, limit)


def _trade_rows(m: SymbolMarket, lo: int, limit: int) -> list[dict]:
    return [
        {
            "id": t,
            "price": fmt8(p),
            "qty": fmt8(qty),
            "quoteQty": fmt8(round_half_even_8(p * qty)),
            "time": ts,
            "isBuyerMaker": mk,
            "isBestMatch": True,
        }
        for t, p, qty, ts, mk in m.trades(lo, lo + limit)
    ]


def recent_trades(sim: Simulator, q: dict[str, str]) -> list[dict]:
    m = _symbol(sim, q)
    limit = limit_param(q, 500, 1000)
    return _trade_rows(m, max(m.first_trade_id, m.next_trade_id - limit), limit)


def historical_trades(sim: Simulator, q: dict[str, str]) -> list[dict]:
    m = _symbol(sim, q)
    limit = limit_param(q, 500, 1000)
    from_id = int_param(q, "fromId")
    lo = m.next_trade_id - limit if from_id is None else from_id
    # Trades the `lose` fault took are gone from here too (fetched with as many more).
    lost = len(sim.lost_trades.get(m.spec.symbol.upper(), ()))
    rows = _trade_rows(m, max(lo, m.first_trade_id), limit + lost)
    return sim.without_lost(m.spec.symbol, rows, limit, key="id")


def get_klines(sim: Simulator, q: dict[str, str]) -> list[list]:
    m = _symbol(sim, q)
    interval = q.get("interval", "")
    if interval not in klines.INTERVALS_MS:
        raise ApiError(-1120, "Invalid interval.")
    limit = limit_param(q, 500, 1000)
    start, end = int_param(q, "startTime"), int_param(q, "endTime")
    return klines.compute(m, interval, start, end, limit, clock.now_ms())  # tlive


def _depth_weight(q: dict[str, str]) -> int:
    try:
        return depth_weight(limit_param(q, 100, 5000))
    except ApiError:  # the handler answers it; a refused request costs the least
        return depth_weight(1)


def depth_snapshot(sim: Simulator, q: dict[str, str]) -> dict:
    m = _symbol(sim, q)
    return sim.depth.answer(m.spec.symbol, limit_param(q, 100, 5000))


def exchange_info(sim: Simulator, q: dict[str, str]) -> dict:
    wanted = None
    if "symbol" in q:
        wanted = [q["symbol"]]
    elif "symbols" in q:
        try:
            wanted = orjson.loads(q["symbols"])
        except orjson.JSONDecodeError:
            raise ApiError(-1100, "Illegal characters found in parameter 'symbols'.") from None
    markets = list(sim.market.symbols.values())
    if wanted is not None:
        if any(
            not isinstance(s, str) or sim.market.get(s) is None or not s.isupper() for s in wanted
        ):
            raise ApiError(-1121, "Invalid symbol.")
        markets = [sim.market.symbols[s] for s in wanted]
    return {
        "timezone": "UTC",
        "serverTime": clock.now_ms(),  # tlive: shifted clock
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": sim.config.weight_limit,
            },
        ],
        "exchangeFilters": [],
        "symbols": [
            {
                "symbol": m.spec.symbol,
                "status": "TRADING",
                "baseAsset": m.spec.base,
                "baseAssetPrecision": 8,
                "quoteAsset": m.spec.quote,
                "quotePrecision": 8,
                "quoteAssetPrecision": 8,
                "orderTypes": ["LIMIT", "MARKET"],
                "isSpotTradingAllowed": True,
                "permissions": ["SPOT"],
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": fmt8(m.spec.tick),
                        "maxPrice": "1000000.00000000",
                        "tickSize": fmt8(m.spec.tick),
                    },
                    {
                        "filterType": "LOT_SIZE",
                        "minQty": fmt8(m.spec.qty_step),
                        "maxQty": "9000.00000000",
                        "stepSize": fmt8(m.spec.qty_step),
                    },
                ],
            }
            for m in markets
        ],
    }


API = {
    "/api/v3/ping": lambda sim, q: {},
    "/api/v3/time": lambda sim, q: {"serverTime": clock.now_ms()},  # tlive: shifted clock
    "/api/v3/exchangeInfo": exchange_info,
    "/api/v3/aggTrades": agg_trades,
    "/api/v3/trades": recent_trades,
    "/api/v3/historicalTrades": historical_trades,
    "/api/v3/klines": get_klines,
    DEPTH_PATH: depth_snapshot,
}


def handle(sim: Simulator, req: Request, ip: str) -> Reply:
    sim.stats["rest_requests"] += 1
    if req.path.startswith("/_sim/"):
        return control(sim, req)
    handler = sim.api.get(req.path)
    if handler is None:
        return 404, {"code": -1000, "msg": f"Unknown path {req.path}."}, {}
    if req.method not in ("GET", "HEAD"):
        return 405, {"code": -1000, "msg": f"{req.method} is not allowed here."}, {}
    now = time.time()
    weight = _depth_weight(req.query) if req.path == DEPTH_PATH else WEIGHTS[req.path]
    used, over = sim.limiter.charge(ip, weight, now)
    headers = {"X-MBX-USED-WEIGHT-1M": str(used), "X-MBX-USED-WEIGHT": str(used)}
    if over:
        sim.stats["rest_429"] += 1
        headers["Retry-After"] = str(max(1, 60 - int(now % 60)))
        limit = sim.config.weight_limit
        return (
            429,
            {
                "code": -1003,
                "msg": (
                    f"Too much request weight used; current limit is {limit} request weight "
                    "per 1 MINUTE. Please use WebSocket Streams for live updates to avoid "
                    "polling the API."
                ),
            },
            headers,
        )
    try:
        return 200, handler(sim, req.query), headers
    except ApiError as exc:
        return exc.status, {"code": exc.code, "msg": exc.msg}, headers


def control(sim: Simulator, req: Request) -> Reply:
    """``GET /_sim/stats``; ``POST /_sim/faults`` {"spec": "..."} replaces the schedule,
    {"trigger": kind, "param": seconds} injects into every open connection now;
    ``POST /_sim/market`` {"paused": bool, "rate": msgs_per_s}."""
    if req.path == "/_sim/stats" and req.method == "GET":
        return 200, sim.snapshot(), {}
    if req.method != "POST" or req.path not in ("/_sim/faults", "/_sim/market", "/_sim/depth"):
        return 404, {"code": -1000, "msg": f"Unknown control {req.method} {req.path}."}, {}
    try:
        body = orjson.loads(req.body or b"{}")
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        if req.path == "/_sim/depth":
            return 200, sim.depth.control(body), {}
        if req.path == "/_sim/market":
            sim.control_market(body.get("paused"), body.get("rate"))
            return 200, {"paused": sim.paused, "rate": sim.rate}, {}
        if "spec" in body:
            sim.set_faults(str(body["spec"]))
        if "trigger" in body:
            kind, param = body["trigger"], body.get("param")
            if kind not in faults.KINDS:
                raise ValueError(f"trigger={kind!r} is not one of {', '.join(faults.KINDS)}")
            param = float(param) if param is not None else faults.DEFAULT_PARAM.get(kind)
            return 200, {"triggered": kind, "connections": sim.trigger(kind, param)}, {}
        return 200, {"faults": sim.plan.describe()}, {}
    except (ValueError, TypeError) as exc:  # includes JSON and fault-spec errors
        return 400, {"code": -1000, "msg": str(exc)}, {}
