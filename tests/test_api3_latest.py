"""``/v1/latest`` answered before FastAPI (``quant_api.latest_fast``) is the route's answer: the
same status, headers and bytes, in every case it answers (all from Redis, a mix with the
warehouse, an invalid Redis value, Redis down, unknown symbol, warehouse down), and every request
it declines (token, parameters, CORS, method) gets FastAPI's own answer. A real redis-server and
the real warehouse endpoint (``scripts/test-services``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from quant_api.app import create_app
from quant_dev.processes import free_port
from quant_dev.serving import RedisServer
from quant_resources.lake import LakeResource
from quant_resources.latest_store import LatestStore, latest_key
from quant_resources.warehouse import WarehouseResource
from tests.live_helpers import drop, fresh_warehouse

pytestmark = pytest.mark.services

TOKENS = ["token-alpha", "token-beta"]
AUTH = {"Authorization": "Bearer token-beta"}
SOURCE = "binance"
STAMP = datetime(2024, 12, 31, 20, tzinfo=UTC)
CORS = "https://dash.example"


def values(symbol: str) -> dict[str, dict]:
    stamp = STAMP.isoformat()
    return {
        "trade": {
            "source": SOURCE,
            "symbol": symbol,
            "trade_id": 7,
            "price": "64100.25",
            "qty": "0.5",
            "taker_side": "buy",
            "ts_event": stamp,
        },
        "book_ticker": {
            "source": SOURCE,
            "symbol": symbol,
            "update_id": 3,
            "bid_price": "64100.1",
            "bid_qty": "1",
            "ask_price": "64100.3",
            "ask_qty": "2",
            "ts_init": stamp,
        },
        "bar": {
            "source": SOURCE,
            "symbol": symbol,
            "interval": "1m",
            "ts_event": stamp,
            "ts_close": (STAMP + timedelta(seconds=59, milliseconds=999)).isoformat(),
            "open": "64000",
            "high": "64200",
            "low": "63900",
            "close": "64100.25",
            "volume": "12.5",
        },
        "book": {
            "source": SOURCE,
            "symbol": symbol,
            "update_id": 2,
            "synced_from": 1,
            "bids": [{"price": "64000", "qty": "1"}],
            "asks": [],
            "ts_event": stamp,
        },
    }


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis") / "redis", persist=False)
    server.start()
    store = LatestStore(server.url)
    for kind, value in values("BTCUSDT").items():  # all four kinds
        store.client.set(latest_key(SOURCE, "BTCUSDT", kind), json.dumps(value))
    # ETHUSDT: the trade only; the warehouse holds its quote.
    store.client.set(latest_key(SOURCE, "ETHUSDT", "trade"), json.dumps(values("ETHUSDT")["trade"]))
    # SOLUSDT: all four, the bar not a valid contract (the warehouse answers the bar).
    for kind, value in values("SOLUSDT").items():
        store.client.set(latest_key(SOURCE, "SOLUSDT", kind), json.dumps(value))
    store.client.set(latest_key(SOURCE, "SOLUSDT", "bar"), b'{"not": "a bar"}')
    store.close()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def warehouse(clickhouse_url):
    warehouse = fresh_warehouse(clickhouse_url)
    rows = [
        {
            "source": SOURCE,
            "symbol": symbol,
            "update_id": 9000,
            "bid_price": Decimal("64000.1"),
            "bid_qty": Decimal("1.5"),
            "ask_price": Decimal("64000.2"),
            "ask_qty": Decimal("2"),
            "ts": STAMP,
            "ts_init": STAMP + timedelta(milliseconds=2),
            "session_id": "s-1",
        }
        for symbol in ("ETHUSDT", "BTCUSDT", "SOLUSDT")
    ]
    warehouse.insert("quotes", pa.Table.from_pylist(rows))
    yield warehouse
    drop(warehouse)


def service(warehouse, redis_url: str | None, tmp_path, cors: bool = False):
    return create_app(
        warehouse=warehouse,
        lake=LakeResource(url=f"file://{tmp_path}"),
        latest_store=LatestStore(redis_url) if redis_url else None,
        tokens=TOKENS,
        cors_origins=[CORS] if cors else [],
    )


def clients(app):
    """(the service, its early layer alone, FastAPI alone): the early-only client fails a
    request the early layer declines; the FastAPI-only one never sees the early layer."""

    async def early_only(scope, receive, send) -> None:
        if scope["type"] != "http":  # the lifespan
            await app(scope, receive, send)
        elif not await app.state.latest_early.answered(scope, receive, send):
            raise AssertionError(f"declined: {scope['path']}?{scope['query_string']!r}")

    async def fastapi_only(scope, receive, send) -> None:
        await FastAPI.__call__(app, scope, receive, send)

    return TestClient(app), TestClient(early_only), TestClient(fastapi_only)


def same(first, second) -> None:
    assert first.status_code == second.status_code, (first.text, second.text)
    assert first.content == second.content
    assert list(first.headers.items()) == list(second.headers.items())


@pytest.mark.parametrize(
    ("symbol", "status", "origins"),
    [
        ("BTCUSDT", 200, {"redis"}),
        ("btcusdt", 200, {"redis"}),
        ("ETHUSDT", 200, {"redis", "clickhouse"}),
        ("SOLUSDT", 200, {"redis"}),
        ("NOPE", 404, None),
    ],
)
def test_the_early_answer_is_the_routes_answer(
    warehouse, redis_url, tmp_path, symbol, status, origins
) -> None:
    app = service(warehouse, redis_url, tmp_path)
    full, early, routed = clients(app)
    url = f"/v1/latest/{symbol}?source={SOURCE}"
    with full, early, routed:
        answers = [client.get(url, headers=AUTH) for client in (full, early, routed)]
        again = early.get(url, headers=AUTH)  # the kept body, where there is one
    same(answers[0], answers[2])
    same(answers[1], answers[2])
    same(again, answers[2])
    assert answers[0].status_code == status
    body = answers[0].json()
    if origins is None:
        assert body["parameter"] == "symbol" and body["value"] == symbol
        return
    assert {item["from"] for k, item in body.items() if isinstance(item, dict)} == origins
    if symbol == "SOLUSDT":
        assert body["bar"] is None  # invalid in Redis, and no bar in the warehouse
        assert body["book_ticker"]["from"] == "redis"


def test_redis_down_falls_back_to_the_warehouse_saying_so(warehouse, tmp_path) -> None:
    dead = f"redis://:secret@127.0.0.1:{free_port()}/0"
    app = service(warehouse, dead, tmp_path)
    full, early, routed = clients(app)
    url = f"/v1/latest/ETHUSDT?source={SOURCE}"
    with full, early, routed:
        answers = [client.get(url, headers=AUTH) for client in (full, early, routed)]
    same(answers[0], answers[2])
    same(answers[1], answers[2])
    body = answers[0].json()
    assert body["book_ticker"]["from"] == "clickhouse" and body["book"] is None
    assert "secret" not in answers[0].text


def test_warehouse_down_is_the_same_503(redis_url, tmp_path) -> None:
    app = service(WarehouseResource(url="http://127.0.0.1:1"), redis_url, tmp_path)
    full, early, routed = clients(app)
    url = f"/v1/latest/ETHUSDT?source={SOURCE}"  # Redis lacks its bar: the warehouse is asked
    with full, early, routed:
        answers = [client.get(url, headers=AUTH) for client in (full, early, routed)]
    same(answers[0], answers[2])
    same(answers[1], answers[2])
    assert answers[0].status_code == 503 and "warehouse" in answers[0].json()["detail"]


@pytest.mark.parametrize(
    ("url", "headers", "status"),
    [
        ("/v1/latest/BTCUSDT?source=binance", {}, 401),
        ("/v1/latest/BTCUSDT?source=binance", {"Authorization": "Bearer wrong"}, 401),
        ("/v1/latest/BTCUSDT?source=binance", {"Authorization": "Basic token-beta"}, 401),
        ("/v1/latest/BTCUSDT?source=binance", {"Authorization": "Bearer "}, 401),
        ("/v1/latest/BTCUSDT", AUTH, 400),
        ("/v1/latest/BTCUSDT?source=BINANCE", AUTH, 400),
        ("/v1/latest/BTCUSDT?source=bin%20ance", AUTH, 400),
        ("/v1/latest/BTCUSDT?source=binance&source=x", AUTH, 404),  # FastAPI takes the last
        ("/v1/latest/BTCUSDT?source=binance&x=1", AUTH, 200),
        ("/v1/latest/BTC%20USDT?source=binance", AUTH, 400),
        ("/v1/latest/BTCUSDT/x?source=binance", AUTH, 404),
        ("/v1/latest/BTCUSDT?source=binance", {**AUTH, "Origin": CORS}, 200),
    ],
)
def test_declined_requests_get_fastapis_answer(
    warehouse, redis_url, tmp_path, url, headers, status
) -> None:
    app = service(warehouse, redis_url, tmp_path, cors=True)
    full, early, routed = clients(app)
    with full, early, routed:
        with pytest.raises(AssertionError, match="declined"):
            early.get(url, headers=headers)
        answers = [client.get(url, headers=headers) for client in (full, routed)]
        posted = full.post(url, headers=headers)
    same(*answers)
    assert answers[0].status_code == status, answers[0].text
    if status != 200:
        assert answers[0].json()["detail"]
    if "Origin" in headers:
        assert answers[0].headers["access-control-allow-origin"] == CORS
    assert posted.status_code in (401, 404, 405)


def test_a_changed_value_is_answered_anew(warehouse, redis_url, tmp_path) -> None:
    """The kept body serves only the exact bytes it was made of."""
    app = service(warehouse, redis_url, tmp_path)
    store = app.state.latest_store
    symbol = "ADAUSDT"
    current = values(symbol)
    for kind, value in current.items():
        store.client.set(latest_key(SOURCE, symbol, kind), json.dumps(value))
    url = f"/v1/latest/{symbol}?source={SOURCE}"
    with TestClient(app) as client:
        first = client.get(url, headers=AUTH)
        assert client.get(url, headers=AUTH).content == first.content
        current["trade"]["price"] = "0.0525"
        store.client.set(latest_key(SOURCE, symbol, "trade"), json.dumps(current["trade"]))
        assert client.get(url, headers=AUTH).json()["trade"]["value"]["price"] == "0.0525"
        store.client.set(latest_key(SOURCE, symbol, "book"), b"{not json")
        assert client.get(url, headers=AUTH).json()["book"] is None
    store.close()
