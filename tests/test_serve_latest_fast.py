"""``/v1/latest`` answered before routing (quant_api.latest_fast) is the route's answer, byte for
byte, and only for the plain authorised request Redis answers whole: every other request reaches
the FastAPI route and its documented errors. A real redis-server; no warehouse is needed (a
request that would need it is not answered early)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from quant_api.app import create_app
from quant_api.latest_fast import LatestFromRedis
from quant_dev.serving import RedisServer
from quant_resources.latest_store import LatestStore, latest_key
from quant_resources.warehouse import WarehouseResource

TOKENS = ["token-alpha", "token-beta"]
SOURCE, SYMBOL = "binance", "BTCUSDT"
STAMP = datetime(2024, 12, 31, 20, tzinfo=UTC).isoformat()
VALUES = {
    "trade": {
        "source": SOURCE,
        "symbol": SYMBOL,
        "trade_id": 7,
        "price": "64100.25",
        "qty": "0.5",
        "taker_side": "buy",
        "ts_event": STAMP,
    },
    "book_ticker": {
        "source": SOURCE,
        "symbol": SYMBOL,
        "update_id": 3,
        "bid_price": "64100.1",
        "bid_qty": "1",
        "ask_price": "64100.3",
        "ask_qty": "2",
        "ts_init": STAMP,
    },
    "bar": {
        "source": SOURCE,
        "symbol": SYMBOL,
        "interval": "1m",
        "ts_event": STAMP,
        "ts_close": "2024-12-31T20:00:59.999000+00:00",
        "open": "64000",
        "high": "64200",
        "low": "63900",
        "close": "64100.25",
        "volume": "12.5",
    },
}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis") / "redis", persist=False)
    server.start()
    store = LatestStore(server.url)
    for kind, value in VALUES.items():
        store.client.set(latest_key(SOURCE, SYMBOL, kind), json.dumps(value))
    # Nothing listens on port 1: a request that reached the warehouse would be a 503.
    yield create_app(
        warehouse=WarehouseResource(url="http://127.0.0.1:1"),
        latest_store=store,
        tokens=TOKENS,
        cors_origins=["https://dash.example"],
    )
    store.close()
    server.stop()


def scope(path: str, query: str = f"source={SOURCE}", auth: str | None = "Bearer token-beta"):
    headers = [(b"host", b"test")]
    if auth is not None:
        headers.append((b"authorization", auth.encode()))
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "root_path": "",
        "query_string": query.encode(),
        "headers": headers,
    }


def test_the_early_answer_is_the_routes_answer(app) -> None:
    early = LatestFromRedis(None, app.state)
    assert early.answer(scope(f"/v1/latest/{SYMBOL.lower()}")) is not None
    assert early.answer(scope(f"/v1/latest/{SYMBOL}", auth="bearer token-alpha")) is not None
    with TestClient(app) as client:
        auth = {"Authorization": "Bearer token-beta", "Origin": "https://dash.example"}
        plain = client.get(f"/v1/latest/{SYMBOL}?source={SOURCE}", headers=auth)
        # An extra query parameter is ignored by the route but declined by the early answer.
        routed = client.get(f"/v1/latest/{SYMBOL}?source={SOURCE}&x=1", headers=auth)
    assert plain.status_code == routed.status_code == 200
    assert plain.content == routed.content
    assert plain.headers["content-type"] == routed.headers["content-type"]
    assert plain.headers["access-control-allow-origin"] == "https://dash.example"  # CORS kept
    body = plain.json()
    assert {k: body[k]["from"] for k in VALUES} == dict.fromkeys(VALUES, "redis")
    assert body["trade"]["value"]["price"] == "64100.25"


@pytest.mark.parametrize(
    ("path", "query", "auth"),
    [
        (f"/v1/latest/{SYMBOL}", f"source={SOURCE}", None),
        (f"/v1/latest/{SYMBOL}", f"source={SOURCE}", "Bearer wrong"),
        (f"/v1/latest/{SYMBOL}", f"source={SOURCE}", "Basic token-beta"),
        (f"/v1/latest/{SYMBOL}", f"source={SOURCE}", "Bearer "),
        (f"/v1/latest/{SYMBOL}", "", "Bearer token-beta"),
        (f"/v1/latest/{SYMBOL}", "source=BINANCE", "Bearer token-beta"),
        (f"/v1/latest/{SYMBOL}", f"source={SOURCE}&source=x", "Bearer token-beta"),
        ("/v1/latest/BTC USDT", f"source={SOURCE}", "Bearer token-beta"),
        (f"/v1/latest/{SYMBOL}/x", f"source={SOURCE}", "Bearer token-beta"),
        ("/v1/latest/ETHUSDT", f"source={SOURCE}", "Bearer token-beta"),  # not in Redis
    ],
)
def test_everything_else_goes_to_the_route(app, path, query, auth) -> None:
    assert LatestFromRedis(None, app.state).answer(scope(path, query, auth)) is None


@pytest.mark.parametrize(
    ("url", "auth", "status", "parameter"),
    [
        (f"/v1/latest/{SYMBOL}?source={SOURCE}", None, 401, "Authorization"),
        (f"/v1/latest/{SYMBOL}?source={SOURCE}", "Bearer wrong", 401, "Authorization"),
        (f"/v1/latest/{SYMBOL}", "Bearer token-beta", 400, "source"),
        (f"/v1/latest/{SYMBOL}?source=BIN%20ANCE", "Bearer token-beta", 400, "source"),
        ("/v1/latest/BTC%20USDT?source=binance", "Bearer token-beta", 400, "symbol"),
    ],
)
def test_declined_requests_get_the_routes_errors(app, url, auth, status, parameter) -> None:
    headers = {"Authorization": auth} if auth else {}
    with TestClient(app) as client:
        answer = client.get(url, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.json()["parameter"] == parameter


def test_a_changed_value_is_answered_anew(app) -> None:
    """The kept body serves only the exact bytes it was made of: a new trade is in the next
    answer, and a value that no longer validates sends the request to the route."""
    symbol, store = "ETHBTC", app.state.latest_store
    values = {kind: {**value, "symbol": symbol} for kind, value in VALUES.items()}
    for kind, value in values.items():
        store.client.set(latest_key(SOURCE, symbol, kind), json.dumps(value))
    early = LatestFromRedis(None, app.state)
    path = f"/v1/latest/{symbol}"
    first = early.answer(scope(path))
    assert early.answer(scope(path)) is first  # unchanged bytes: the kept body
    values["trade"]["price"] = "0.0525"
    store.client.set(latest_key(SOURCE, symbol, "trade"), json.dumps(values["trade"]))
    assert json.loads(early.answer(scope(path)))["trade"]["value"]["price"] == "0.0525"
    store.client.set(latest_key(SOURCE, symbol, "book"), b"{not json")
    assert early.answer(scope(path)) is None
