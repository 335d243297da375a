"""``/v1/bars`` in Arrow sends the warehouse's own Arrow stream for the last page (record batches
byte for byte, behind the contract's schema message); a page with more behind it is cut to the
page size and its cursor stays exact. The real warehouse endpoint (``scripts/test-services``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from quant_api import bars as bars_sql
from quant_api.app import create_app
from quant_core.tables import BARS_1M
from quant_resources.lake import LakeResource
from tests.live_helpers import drop, fresh_warehouse

pytestmark = pytest.mark.services

ARROW = "application/vnd.apache.arrow.stream"
SOURCE, SYMBOL = "binance", "BTCUSDT"
T0 = datetime(2024, 3, 1, tzinfo=UTC)
N = 500


def test_the_schema_message_is_replaced_and_the_batches_kept() -> None:
    table = pa.table(
        {
            name: pa.array([], field.type)
            for name, field in zip(bars_sql.SCHEMA.names, bars_sql.SCHEMA, strict=True)
        }
    )
    not_null = pa.schema([field.with_nullable(False) for field in bars_sql.SCHEMA])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, not_null) as writer:
        writer.write_table(table.cast(not_null))
    stream = sink.getvalue().to_pybytes()
    out = bars_sql.with_contract_schema(stream)
    assert pa.ipc.open_stream(out).schema == bars_sql.SCHEMA
    head = len(bars_sql.SCHEMA.serialize())
    assert out[head:] == stream[8 + int.from_bytes(stream[4:8], "little") :]
    with pytest.raises(ValueError, match="Arrow IPC stream"):
        bars_sql.with_contract_schema(b"PAR1")


@pytest.fixture(scope="module")
def client(clickhouse_url, tmp_path_factory):
    warehouse = fresh_warehouse(clickhouse_url)
    rows = []
    for k in range(N):
        ts = T0 + timedelta(minutes=k)
        price = Decimal(64000 + k % 17)
        rows.append(
            {
                "source": SOURCE,
                "symbol": SYMBOL,
                "interval": "1m",
                "ts": ts,
                "ts_close": ts + timedelta(seconds=59, milliseconds=999),
                "session_date": ts.date(),
                "session": "",
                "open": price,
                "high": price + 1,
                "low": price - 1,
                "close": price,
                "volume": Decimal("1.5"),
                "quote_volume": price * Decimal("1.5"),
                "vwap": price if k % 3 else Decimal(0),
                "trade_count": k,
                "taker_buy_volume": Decimal("0.5"),
                "taker_buy_quote_volume": price / 2,
                "adjustment": "raw",
                "adj_factor": 1.0,
            }
        )
    table = pa.Table.from_pylist(rows, schema=BARS_1M)
    warehouse.insert("bars_1m", table.append_column("version", pa.array([1] * N, pa.uint64())))
    app = create_app(
        warehouse=warehouse,
        lake=LakeResource(url=f"file://{tmp_path_factory.mktemp('lake')}"),
        latest_store=None,
        tokens=[],
        cors_origins=[],
    )
    with TestClient(app) as test_client:
        yield test_client, warehouse
    drop(warehouse)


def bars(client, **params):
    query = {
        "symbol": SYMBOL,
        "source": SOURCE,
        "start": T0.isoformat(),
        "end": (T0 + timedelta(days=1)).isoformat(),
        **params,
    }
    return client.get("/v1/bars", params=query, headers={"Accept": ARROW})


def test_the_last_page_is_the_warehouses_stream(client) -> None:
    http, warehouse = client
    answer = bars(http, limit=N)
    assert answer.status_code == 200 and "x-next-cursor" not in answer.headers
    got = pa.ipc.open_stream(answer.content).read_all()
    assert got.schema == bars_sql.SCHEMA and got.num_rows == N
    params = {
        "source": SOURCE,
        "symbol": SYMBOL,
        "lo": T0,
        "hi": T0 + timedelta(days=1),
        "limit": N + 1,
    }
    stream = warehouse.client.raw_query(bars_sql.SQL_1M, parameters=params, fmt="ArrowStream")
    assert got.equals(pa.ipc.open_stream(stream).read_all().cast(bars_sql.SCHEMA))
    head = len(bars_sql.SCHEMA.serialize())
    assert answer.content[head:] == stream[8 + int.from_bytes(stream[4:8], "little") :]
    json_rows = http.get(
        "/v1/bars",
        params={
            "symbol": SYMBOL,
            "source": SOURCE,
            "start": T0.isoformat(),
            "end": (T0 + timedelta(days=1)).isoformat(),
            "limit": N,
        },
    ).json()["data"]
    assert [row["trade_count"] for row in json_rows] == got.column("trade_count").to_pylist()


@pytest.mark.parametrize("interval", ["1m", "5m", "1h"])
def test_pages_with_more_behind_keep_exact_cursors(client, interval) -> None:
    http, _ = client
    whole = pa.ipc.open_stream(bars(http, interval=interval, limit=N).content).read_all()
    pages, cursor = [], None
    while True:
        answer = bars(http, interval=interval, limit=7, **({"cursor": cursor} if cursor else {}))
        assert answer.status_code == 200, answer.text
        page = pa.ipc.open_stream(answer.content).read_all()
        assert page.schema == bars_sql.SCHEMA
        pages.append(page)
        cursor = answer.headers.get("x-next-cursor")
        if cursor is None:
            break
        assert page.num_rows == 7
    assert pa.concat_tables(pages).equals(whole)
    assert whole.num_rows == {"1m": N, "5m": N // 5, "1h": -(-N // 60)}[interval]
