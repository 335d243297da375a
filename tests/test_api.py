"""The data service against the real warehouse endpoint and a real redis-server (both started by
``scripts/test-services``): in-process through FastAPI's TestClient, and once as a real
``quant serve api`` process."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx2
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from quant_api.app import create_app
from quant_core.tables import BARS_1M, OPTIONS_QUOTES
from quant_dev.processes import Child, free_port, quant
from quant_resources.lake import LakeResource
from quant_resources.latest_store import LatestStore, latest_key
from tests.live_helpers import drop, fresh_warehouse

pytestmark = pytest.mark.services

TOKENS = ["token-alpha", "token-beta"]
AUTH = {"Authorization": f"Bearer {TOKENS[1]}"}
SOURCE = "binance"
SYMBOL = "BTCUSDT"
T0 = datetime(2024, 3, 1, tzinfo=UTC)
N_BARS = 3000  # a little over two days, with gaps
Q8 = Decimal("0.00000001")
ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"


def _d(units: int) -> Decimal:
    return Decimal(units).scaleb(-8)


def make_bars(seed: int = 7) -> list[dict]:
    """1m bars with random 8-place decimals, some minutes missing, every invariant kept."""
    rng = random.Random(seed)
    rows, ts = [], T0
    for _ in range(N_BARS):
        ts += timedelta(minutes=rng.choice([1, 1, 1, 1, 2, 7]))
        o, c = rng.randint(10**12, 10**13), rng.randint(10**12, 10**13)
        hi, lo = max(o, c) + rng.randint(0, 10**10), min(o, c) - rng.randint(0, 10**10)
        vol = rng.randint(0, 10**11)
        vwap = rng.randint(lo, hi) if vol else 0
        buy = rng.randint(0, vol)
        rows.append(
            {
                "source": SOURCE,
                "symbol": SYMBOL,
                "interval": "1m",
                "ts": ts,
                "ts_close": ts + timedelta(seconds=59, milliseconds=999),
                "session_date": ts.date(),
                "session": "continuous",
                "open": _d(o),
                "high": _d(hi),
                "low": _d(lo),
                "close": _d(c),
                "volume": _d(vol),
                "quote_volume": (_d(vol) * _d(vwap)).quantize(Q8),
                "vwap": _d(vwap),
                "trade_count": rng.randint(0, 500) if vol else 0,
                "taker_buy_volume": _d(buy),
                "taker_buy_quote_volume": (_d(buy) * _d(vwap)).quantize(Q8),
                "adjustment": "raw",
                "adj_factor": 1.0,
            }
        )
    return rows


def as_contract(row: dict) -> dict:
    """A stored 1m bar as the service's JSON shows it."""
    out = {
        "source": row["source"],
        "symbol": row["symbol"],
        "interval": row["interval"],
        "ts_event": row["ts"],
        "ts_close": row["ts_close"],
        **{k: row[k] for k in ("open", "high", "low", "close", "volume", "trade_count")},
        **{k: row[k] for k in ("quote_volume", "taker_buy_volume", "taker_buy_quote_volume")},
        "vwap": row["vwap"] or None,
        "session": row["session"],
        "adjustment": row["adjustment"],
    }
    return normalise(out)


def normalise(bar: dict) -> dict:
    """Comparable form: decimals as Decimal, times as aware datetimes."""
    out = {}
    for key, value in bar.items():
        if key in ("ts_event", "ts_close") and isinstance(value, str):
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        elif isinstance(value, str) and key not in ("source", "symbol", "interval", "session"):
            value = value if key == "adjustment" else Decimal(value)
        out[key] = value
    return out


def reference_rollup(rows: list[dict], step: timedelta, start: datetime, end: datetime) -> list:
    """The rolled-up bars computed in Python with exact decimals (see quant_api.bars)."""
    step_ms = int(step.total_seconds() * 1000)

    def ceil(t: datetime) -> int:
        ms = int(t.timestamp() * 1000)
        return -(-ms // step_ms) * step_ms

    lo, hi = ceil(start), ceil(end)
    buckets: dict[int, list[dict]] = {}
    for row in rows:
        ms = int(row["ts"].timestamp() * 1000)
        if lo <= ms < hi:
            buckets.setdefault(ms // step_ms * step_ms, []).append(row)
    out = []
    for key in sorted(buckets):
        group = sorted(buckets[key], key=lambda r: r["ts"])
        weighted = [r for r in group if r["vwap"] > 0]
        num = sum(int(r["vwap"].scaleb(8)) * int(r["volume"].scaleb(8)) for r in weighted)
        den = sum(int(r["volume"].scaleb(8)) for r in weighted)
        begin = datetime.fromtimestamp(key / 1000, UTC)
        out.append(
            {
                "source": SOURCE,
                "symbol": SYMBOL,
                "interval": {60_000 * 5: "5m", 60_000 * 15: "15m", 3_600_000: "1h"}.get(
                    step_ms, "1d"
                ),
                "ts_event": begin,
                "ts_close": begin + step - timedelta(milliseconds=1),
                "open": group[0]["open"],
                "high": max(r["high"] for r in group),
                "low": min(r["low"] for r in group),
                "close": group[-1]["close"],
                "volume": sum((r["volume"] for r in group), Decimal(0)),
                # vwap x volume has 16 places, volume 8: the quotient in units of 1e-8,
                # truncated, is num // den exactly.
                "vwap": _d(num // den) if den else None,
                "trade_count": sum(r["trade_count"] for r in group),
                **{
                    k: sum((r[k] for r in group), Decimal(0))
                    for k in ("quote_volume", "taker_buy_volume", "taker_buy_quote_volume")
                },
                "session": "continuous",
                "adjustment": "raw",
            }
        )
    return out


def options_rows(snapshot: datetime, version: int) -> list[dict]:
    rows = []
    for strike, right, code in ((500, "call", "C"), (500, "put", "P"), (510, "call", "C")):
        rows.append(
            {
                "source": "synthetic",
                "underlying": "SPY",
                "symbol": f"SPY240315{code}{strike * 1000:08d}",
                "expiry": datetime(2024, 3, 15).date(),
                "strike": Decimal(strike),
                "right": right,
                "ts": snapshot,
                "snapshot_ts": snapshot,
                "session_date": snapshot.date(),
                "bid_price": Decimal("1.25") + version,
                "ask_price": Decimal("1.35") + version,
                "bid_size": Decimal(10),
                "ask_size": Decimal(12),
                "last_price": Decimal("1.30") + version,
                "underlying_price": Decimal("505.5"),
                "implied_volatility": 0.2,
                "delta": 0.5 if right == "call" else -0.5,
                "gamma": 0.01,
                "theta": -0.1,
                "vega": 0.2,
                "rho": 0.01,
            }
        )
    return rows


SESSION_ID = "binance-20240301T000000Z-abc123"


@pytest.fixture(scope="module")
def stored(clickhouse_url, tmp_path_factory):
    """One migrated database holding the bars, trades, quotes and option chains, and a lake
    holding one session manifest."""
    warehouse = fresh_warehouse(clickhouse_url)
    bars = make_bars()
    table = pa.Table.from_pylist(bars, schema=BARS_1M)
    warehouse.insert(
        "bars_1m", table.append_column("version", pa.array([1] * len(bars), pa.uint64()))
    )
    trade_ts = bars[-1]["ts"] + timedelta(seconds=30)
    warehouse.insert(
        "trades",
        pa.Table.from_pylist(
            [
                {
                    "source": SOURCE,
                    "symbol": SYMBOL,
                    "stream": "aggTrade",
                    "trade_id": 100 + k,
                    "first_trade_id": 200 + k,
                    "last_trade_id": 200 + k,
                    "price": Decimal("64000.5") + k,
                    "qty": Decimal("0.015"),
                    "is_buyer_maker": k == 1,
                    "ts": trade_ts + timedelta(seconds=k),
                    "ts_init": trade_ts + timedelta(seconds=k, milliseconds=3),
                    "session_id": SESSION_ID,
                }
                for k in range(2)
            ]
        ),
    )
    warehouse.insert(
        "quotes",
        pa.Table.from_pylist(
            [
                {
                    "source": SOURCE,
                    "symbol": SYMBOL,
                    "update_id": 9000,
                    "bid_price": Decimal("64000.1"),
                    "bid_qty": Decimal("1.5"),
                    "ask_price": Decimal("64000.2"),
                    "ask_qty": Decimal("2"),
                    "ts": trade_ts,
                    "ts_init": trade_ts + timedelta(milliseconds=2),
                    "session_id": SESSION_ID,
                }
            ]
        ),
    )
    snaps = [datetime(2024, 3, 1, 15, tzinfo=UTC), datetime(2024, 3, 1, 16, tzinfo=UTC)]
    for k, snap in enumerate(snaps):
        chain = pa.Table.from_pylist(options_rows(snap, k), schema=OPTIONS_QUOTES)
        warehouse.insert(
            "options_quotes", chain.append_column("version", pa.array([1] * 3, pa.uint64()))
        )
    lake_dir = tmp_path_factory.mktemp("lake")
    manifest = {
        "format": "quant-session-log",
        "state": "closed",
        "header": {
            "session_id": SESSION_ID,
            "venue": "binance",
            "streams": ["aggTrade"],
            "symbols": ["btcusdt"],
            "start_ns": 1709251200 * 10**9,
        },
        "segments": [{"file": "seg-000001.qlog.zst", "sha256": "00" * 32}],
        "records": 42,
        "final_digest": "ab" * 32,
        "footer": {"records": 42, "counts": {"ws": 40, "conn": 2}, "clean": True},
    }
    (lake_dir / "sessions" / SESSION_ID).mkdir(parents=True)
    (lake_dir / "sessions" / SESSION_ID / "session.json").write_bytes(orjson.dumps(manifest))
    yield {"warehouse": warehouse, "bars": bars, "lake": f"file://{lake_dir}", "trade_ts": trade_ts}
    drop(warehouse)


@pytest.fixture(scope="module")
def redis_store():
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.fail("REDIS_URL is not set: run under scripts/test-services (redis-server)")
    store = LatestStore(url)
    yield store
    store.client.delete(
        *[latest_key(SOURCE, SYMBOL, k) for k in ("trade", "book_ticker", "bar", "book")]
    )
    store.close()


@pytest.fixture
def client(stored, redis_store, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    app = create_app(
        warehouse=stored["warehouse"],
        lake=LakeResource(url=stored["lake"]),
        latest_store=redis_store,
        tokens=TOKENS,
        cors_origins=["https://dash.example"],
    )
    with TestClient(app) as test_client:
        yield test_client


def bars_url(**params) -> str:
    base = {
        "symbol": SYMBOL.lower(),
        "source": SOURCE,
        "start": "2024-03-01T00:00:00Z",
        "end": "2024-03-08T00:00:00Z",
    }
    return "/v1/bars?" + str(httpx2.QueryParams({**base, **params}))


def all_pages(client, url: str, accept: str = "application/json") -> tuple[list[dict], int]:
    rows, pages, cursor = [], 0, None
    while True:
        page_url = url + (f"&cursor={cursor}" if cursor else "")
        response = client.get(page_url, headers={**AUTH, "Accept": accept})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(accept)
        pages += 1
        if accept == ARROW:
            got = pa.ipc.open_stream(response.content).read_all().to_pylist()
        elif accept == PARQUET:
            got = pq.read_table(io.BytesIO(response.content)).to_pylist()
        else:
            body = response.json()
            got = body["data"]
            assert body["next_cursor"] == response.headers.get("x-next-cursor")
        rows.extend(normalise({k: v for k, v in r.items()}) for r in got)
        cursor = response.headers.get("x-next-cursor")
        if cursor is None:
            return rows, pages


# -- bars --------------------------------------------------------------------------------------


@pytest.mark.parametrize("accept", ["application/json", ARROW, PARQUET])
def test_bar_pages_concatenate_to_exactly_the_stored_bars(client, stored, accept) -> None:
    rows, pages = all_pages(client, bars_url(limit=700), accept)
    expected = [as_contract(r) for r in stored["bars"]]
    assert pages == -(-N_BARS // 700)
    assert rows == expected


def test_bars_start_inclusive_end_exclusive(client, stored) -> None:
    first, second = stored["bars"][10]["ts"], stored["bars"][20]["ts"]
    url = bars_url(start=first.isoformat(), end=second.isoformat())
    rows, _ = all_pages(client, url)
    assert [r["ts_event"] for r in rows] == [b["ts"] for b in stored["bars"][10:20]]


@pytest.mark.parametrize(
    ("interval", "step"),
    [
        ("5m", timedelta(minutes=5)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("1d", timedelta(days=1)),
    ],
)
def test_rollups_equal_a_decimal_reference(client, stored, interval, step) -> None:
    # A start inside a bucket: that bucket is not reported (its open lies before start).
    start, end = T0 + timedelta(minutes=7), T0 + timedelta(days=2, minutes=3)
    url = bars_url(interval=interval, start=start.isoformat(), end=end.isoformat(), limit=97)
    rows, _ = all_pages(client, url)
    expected = reference_rollup(stored["bars"], step, start, end)
    assert len(rows) == len(expected) > 1
    assert rows == expected
    arrow, _ = all_pages(client, url, ARROW)
    assert arrow == expected


def test_unknown_symbol_is_404_and_empty_range_an_empty_page(client) -> None:
    response = client.get(bars_url(symbol="NOPE"), headers=AUTH)
    assert response.status_code == 404
    assert response.json()["parameter"] == "symbol" and "NOPE" in response.json()["detail"]
    response = client.get(
        bars_url(start="2020-01-01T00:00:00Z", end="2020-01-02T00:00:00Z"), headers=AUTH
    )
    assert response.status_code == 200
    assert response.json() == {"data": [], "next_cursor": None}


BAD = [
    (bars_url(start="2024-03-01T00:00:00"), 400, "start", "timezone"),
    (bars_url(end="2024-03-02T00:00:00"), 400, "end", "timezone"),
    (bars_url(start="2024-03-02T00:00:00Z", end="2024-03-01T00:00:00Z"), 400, "end", "after"),
    (bars_url(end="2024-03-01T00:00:00Z"), 400, "end", "after"),
    (bars_url(end="2026-03-01T00:00:00Z"), 400, "end", "366 days"),
    (bars_url(start="1900-03-01T00:00:00Z"), 400, "start", "1970"),
    (bars_url(start="yesterday"), 400, "start", "yesterday"),
    (bars_url(interval="2m"), 400, "interval", "2m"),
    (bars_url(limit=100_001), 400, "limit", "100001"),
    (bars_url(limit=0), 400, "limit", "0"),
    (bars_url(symbol="BTC USDT;"), 400, "symbol", "BTC USDT;"),
    (bars_url(source="Binance!"), 400, "source", "Binance!"),
    (bars_url(cursor="not-a-cursor"), 400, "cursor", "not-a-cursor"),
    ("/v1/bars?symbol=BTCUSDT&source=binance&end=2024-03-02T00:00:00Z", 400, "start", "required"),
    ("/v1/latest/BTCUSDT", 400, "source", "required"),
    ("/v1/latest/NOPE?source=binance", 404, "symbol", "NOPE"),
    ("/v1/options/chain/SPY?source=synthetic&at=2024-03-01T15:30:00", 400, "at", "timezone"),
    ("/v1/options/chain/SPY?source=synthetic&at=2024-03-01T14:00:00Z", 404, "underlying", "SPY"),
    ("/v1/sessions/nope-1", 404, "session_id", "nope-1"),
    ("/v1/sessions/bad%20id", 400, "session_id", "bad id"),
]


@pytest.mark.parametrize(("url", "status", "parameter", "named"), BAD)
def test_bad_input_is_a_4xx_naming_parameter_and_value(client, url, status, parameter, named):
    response = client.get(url, headers=AUTH)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["parameter"] == parameter
    assert named in body["detail"]


def test_cursor_of_another_query_is_refused(client) -> None:
    first = client.get(bars_url(limit=10), headers=AUTH)
    cursor = first.headers["x-next-cursor"]
    response = client.get(bars_url(limit=10, interval="5m", cursor=cursor), headers=AUTH)
    assert response.status_code == 400
    assert response.json()["parameter"] == "cursor"
    assert "another query" in response.json()["detail"]


def test_unsupported_accept_is_406_naming_it(client) -> None:
    response = client.get(bars_url(), headers={**AUTH, "Accept": "text/html"})
    assert response.status_code == 406
    assert response.json()["parameter"] == "Accept" and "text/html" in response.json()["detail"]


# -- latest ------------------------------------------------------------------------------------


def test_latest_falls_back_to_clickhouse_then_prefers_redis(client, stored, redis_store) -> None:
    keys = {k: latest_key(SOURCE, SYMBOL, k) for k in ("trade", "book_ticker", "bar", "book")}
    redis_store.client.delete(*keys.values())
    body = client.get(f"/v1/latest/{SYMBOL}?source={SOURCE}", headers=AUTH).json()
    assert {k: body[k]["from"] for k in ("trade", "book_ticker", "bar")} == dict.fromkeys(
        ("trade", "book_ticker", "bar"), "clickhouse"
    )
    assert body["book"] is None
    assert body["trade"]["value"]["trade_id"] == 101  # the newer of the two
    assert body["trade"]["value"]["taker_side"] == "sell"  # is_buyer_maker
    assert body["bar"]["value"]["ts_event"].startswith(
        stored["bars"][-1]["ts"].strftime("%Y-%m-%dT%H:%M")
    )
    assert body["book_ticker"]["value"]["bid_price"] == "64000.10000000"

    newer = {
        "source": SOURCE,
        "symbol": SYMBOL,
        "trade_id": 555,
        "price": "64100.25",
        "qty": "0.5",
        "taker_side": "buy",
        "ts_event": (stored["trade_ts"] + timedelta(minutes=1)).isoformat(),
    }
    book = {  # books2: the BookSnapshot contract the Redis sink stores
        "source": SOURCE,
        "symbol": SYMBOL,
        "update_id": 2,
        "synced_from": 1,
        "bids": [{"price": "64000", "qty": "1"}],
        "asks": [],
        "ts_event": stored["trade_ts"].isoformat(),
        "bids_complete": True,
        "asks_complete": False,
    }
    redis_store.client.set(keys["trade"], orjson.dumps(newer))
    redis_store.client.set(keys["book"], orjson.dumps(book))
    redis_store.client.set(keys["bar"], b'{"not": "a bar"}')  # invalid: the warehouse answers
    body = client.get(f"/v1/latest/{SYMBOL.lower()}?source={SOURCE}", headers=AUTH).json()
    assert body["trade"] == {"from": "redis", "value": {**body["trade"]["value"], "trade_id": 555}}
    assert body["trade"]["value"]["price"] == "64100.25"
    assert body["book"]["from"] == "redis" and body["book"]["value"]["bids"][0]["price"] == "64000"
    assert body["book"]["value"]["asks_complete"] is False  # books2
    assert body["bar"]["from"] == "clickhouse"
    assert body["book_ticker"]["from"] == "clickhouse"
    redis_store.client.delete(*keys.values())


def test_latest_without_redis_reads_the_warehouse(stored) -> None:
    app = create_app(
        warehouse=stored["warehouse"],
        lake=LakeResource(url=stored["lake"]),
        latest_store=None,
        tokens=[],
        cors_origins=[],
    )
    app.state.latest_store = None  # REDIS_URL of the test services is ignored here
    with TestClient(app) as plain:
        body = plain.get(f"/v1/latest/{SYMBOL}?source={SOURCE}").json()
    assert body["trade"]["from"] == "clickhouse"


# -- options and sessions ----------------------------------------------------------------------


def test_options_chain_is_the_snapshot_nearest_before_at(client) -> None:
    url = "/v1/options/chain/spy?source=synthetic&at=2024-03-01T15:59:59Z"
    body = client.get(url, headers=AUTH).json()
    assert body["snapshot_ts"] == "2024-03-01T15:00:00Z"
    assert [q["occ_symbol"] for q in body["data"]] == [
        "SPY240315C00500000",
        "SPY240315P00500000",
        "SPY240315C00510000",
    ]
    assert body["data"][0]["bid_price"] == "1.25000000" and body["truncated"] is False
    body = client.get(url.replace("15:59:59", "16:00:00") + "&limit=2", headers=AUTH).json()
    assert body["snapshot_ts"] == "2024-03-01T16:00:00Z"
    assert body["data"][0]["bid_price"] == "2.25000000" and body["truncated"] is True


def test_sessions_list_and_detail(client) -> None:
    listed = client.get("/v1/sessions", headers=AUTH).json()["data"]
    assert [s["session_id"] for s in listed] == [SESSION_ID]
    detail = client.get(f"/v1/sessions/{SESSION_ID}", headers=AUTH).json()
    assert detail["state"] == "closed" and detail["records"] == 42
    assert detail["final_digest"] == "ab" * 32 and detail["counts"] == {"ws": 40, "conn": 2}
    assert detail["verification"]["status"] == "unknown"  # no DAGSTER_HOME here


# -- auth, CORS, health ------------------------------------------------------------------------


def test_tokens_are_required_and_never_echoed(client) -> None:
    url = f"/v1/latest/{SYMBOL}?source={SOURCE}"
    missing = client.get(url)
    assert missing.status_code == 401 and missing.json()["parameter"] == "Authorization"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = client.get(url, headers={"Authorization": "Bearer token-alphx"})
    assert wrong.status_code == 401 and "token-alphx" not in wrong.text
    for token in TOKENS:
        assert client.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/v1/health").status_code == 200  # health needs no token


def test_cors_only_for_configured_origins(client) -> None:
    allowed = client.get("/v1/health", headers={"Origin": "https://dash.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://dash.example"
    other = client.get("/v1/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_health_names_each_backend(client, stored) -> None:
    body = client.get("/v1/health").json()
    assert body["status"] == "ok" and body["version"] and body["contracts"] == "v1"
    assert all(body[k]["ok"] for k in ("clickhouse", "redis", "lake"))
    broken = LatestStore(os.environ["REDIS_URL"].replace("redis://:", "redis://:wrong"))
    app = create_app(
        warehouse=stored["warehouse"],
        lake=LakeResource(url=stored["lake"]),
        latest_store=broken,
        tokens=[],
        cors_origins=[],
    )
    with TestClient(app) as degraded:
        response = degraded.get("/v1/health")
    assert response.status_code == 503
    assert response.json()["redis"]["ok"] is False
    assert "wrong" not in response.text  # the password is redacted


# -- the OpenAPI document, fuzzed --------------------------------------------------------------


def test_fuzz_against_the_locked_openapi_document(client) -> None:
    """No generated request (valid or not) gets a 5xx; every 4xx names its problem."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    doc = orjson.loads(
        (Path(__file__).parents[1] / "schemas/openapi/quant-api.v1.json").read_bytes()
    )
    schema = schemathesis.openapi.from_dict(doc)
    schema.app = client.app
    strategy = schema.as_strategy() | schema.as_strategy(
        generation_mode=schemathesis.GenerationMode.NEGATIVE
    )

    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=strategy)
    def check(case) -> None:
        response = case.call(headers=AUTH)
        assert response.status_code < 500, (case.path, case.query, response.text)
        if response.status_code >= 400:
            body = response.json()
            assert body["detail"], body
        # Cross-parameter rules (end after start, the longest range, the largest page) are
        # not expressible in OpenAPI: schema-valid requests may be refused, with a 400.
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    check()


# -- a real `quant serve api` process ----------------------------------------------------------


def test_quant_serve_api_process(stored, tmp_path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CLICKHOUSE_URL": stored["warehouse"].resolved_url,
        "LAKE_URL": stored["lake"],
        "QUANT_API_TOKENS": ",".join(TOKENS),
        "QUANT_HOME": str(tmp_path / "home"),
    }
    env.pop("DAGSTER_HOME", None)
    log = tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    with httpx2.Client(base_url=base, timeout=10) as http:

        def healthy() -> bool:  # ready is the state "answers health", not a fixed time
            try:
                return http.get("/v1/health").status_code == 200
            except httpx2.TransportError:  # not listening yet
                return False

        child = Child(
            "quant serve api",
            quant("serve", "api", "--port", str(port)),
            healthy,
            environ=env,
            log=log,
            start_timeout=60,
        )
        try:
            response = http.get(bars_url(limit=100_000), headers={**AUTH, "Accept": ARROW})
            assert response.status_code == 200, response.text
            table = pa.ipc.open_stream(response.content).read_all()
            assert [normalise(r) for r in table.to_pylist()] == [
                as_contract(r) for r in stored["bars"]
            ]
            assert http.get(bars_url()).status_code == 401
        finally:
            child.stop(15)
    assert TOKENS[0] not in log.read_text() and TOKENS[1] not in log.read_text()


def test_serve_refuses_a_public_address_without_tokens(tmp_path) -> None:
    env = {**os.environ, "QUANT_API_TOKENS": "", "QUANT_HOME": str(tmp_path)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "quant_cli.main",
            "serve",
            "api",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "0.0.0.0" in result.stderr and "QUANT_API_TOKENS" in result.stderr


def test_session_verification_from_the_dagster_instance(
    client, stored, tmp_path, monkeypatch
) -> None:
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    other = "binance-20240302T000000Z-def456"
    lake = Path(stored["lake"].removeprefix("file://"))
    manifest = (lake / "sessions" / SESSION_ID / "session.json").read_bytes()
    (lake / "sessions" / other).mkdir()
    (lake / "sessions" / other / "session.json").write_bytes(manifest)
    url = f"/v1/sessions/{SESSION_ID}"
    assert client.get(url, headers=AUTH).json()["verification"]["status"] == "not_verified"
    key = dg.AssetKey("replay_verification")
    outcomes = {
        SESSION_ID: {"chain_intact": True, "bars_match_warehouse": True},
        other: {"chain_intact": True, "bars_match_warehouse": False},
    }
    with dg.DagsterInstance.get() as instance:
        for session, checks in outcomes.items():
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    asset_key=key,
                    partition=session,
                    metadata={"final_digest": "ab" * 32, "trades": 5, "bars": 2},
                )
            )
            for name, passed in checks.items():
                instance.report_runless_asset_event(
                    dg.AssetCheckEvaluation(
                        asset_key=key, check_name=name, passed=passed, partition=session
                    )
                )
    try:
        verified = client.get(url, headers=AUTH).json()["verification"]
        # The other session's failure, reported later, is not this one's.
        assert verified["status"] == "passed"
        assert verified["chain_intact"] is True and verified["bars_match_warehouse"] is True
        assert (verified["final_digest"], verified["trades"], verified["bars"]) == (
            "ab" * 32,
            5,
            2,
        )
        failed = client.get(f"/v1/sessions/{other}", headers=AUTH).json()["verification"]
        assert failed["status"] == "failed" and failed["bars_match_warehouse"] is False
    finally:
        (lake / "sessions" / other / "session.json").unlink()
        (lake / "sessions" / other).rmdir()
