"""The data service (``quant serve api``) against the clients a consumer would otherwise use.

* ``/v1/bars`` in Arrow for one symbol-year of 1m bars (252 sessions x 390 minutes, one page)
  against ``WarehouseResource.query_arrow`` of the same rows with the service's own SQL, both
  over the same ``quant warehouse serve`` endpoint, timed back to back in each of ROUNDS
  rounds (the median round's ratio). Goal >= 0.8x.
* ``/v1/latest`` p99 latency at 500 requests/s from a second process, every item in Redis,
  against a direct Redis MGET of the same keys at the same rate from such a process, both
  open-loop (``benchmarks.api_load``). Goal < 5 ms.
* ``/v1/latest`` CPU time of the service process per request (answered before FastAPI,
  ``quant_api.latest_fast``) against the same request through FastAPI's route (an extra
  query parameter sends it there): on a machine shared with other work, the service's own
  cost is what decides whether it keeps the rate.

Everything runs for real: the warehouse endpoint, redis-server (Debian's, password required)
and the service, each in a process of its own.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from benchmarks.report import Figure
from quant_dev.processes import Child, free_port, quant, warehouse_endpoint
from quant_dev.serving import RedisServer

SOURCE, SYMBOL = "bench", "AAPL"
RATE, SECONDS = 500, 10
ROUNDS = 9  # /v1/bars against query_arrow, back to back
CPU_REQUESTS = 1500
TOKEN = secrets.token_hex(16)


def _bars() -> pa.Table:
    """252 sessions of 390 1m bars from 2024-01-02 14:30 UTC, weekdays only."""
    from quant_core.tables import BARS_1M

    rows, day = [], datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    price = Decimal("180.00")
    while len(rows) < 252 * 390:
        if day.weekday() < 5:
            for minute in range(390):
                ts = day + timedelta(minutes=minute)
                tick = Decimal((minute * 7919 + day.day * 31) % 41 - 20) / 100
                o, c = price, max(price + tick, Decimal("1.00"))
                rows.append(
                    {
                        "source": SOURCE,
                        "symbol": SYMBOL,
                        "interval": "1m",
                        "ts": ts,
                        "ts_close": ts + timedelta(seconds=59, milliseconds=999),
                        "session_date": ts.date(),
                        "session": "regular",
                        "open": o,
                        "high": max(o, c) + Decimal("0.05"),
                        "low": min(o, c) - Decimal("0.05"),
                        "close": c,
                        "volume": Decimal(1000 + minute),
                        "quote_volume": (o + c) / 2 * (1000 + minute),
                        "vwap": (o + c) / 2,
                        "trade_count": 10 + minute % 50,
                        "taker_buy_volume": Decimal(400),
                        "taker_buy_quote_volume": Decimal(400) * o,
                        "adjustment": "raw",
                        "adj_factor": 1.0,
                    }
                )
                price = c
        day += timedelta(days=1)
    table = pa.Table.from_pylist(rows, schema=BARS_1M)
    return table.append_column("version", pa.array([1] * table.num_rows, pa.uint64()))


def _latest_values(redis_url: str, ts: datetime) -> list[str]:
    import redis

    from quant_api.latest import ITEMS
    from quant_resources.latest_store import latest_key

    stamp = ts.isoformat()
    values = {
        "trade": {
            "source": SOURCE,
            "symbol": SYMBOL,
            "trade_id": 1,
            "price": "180.5",
            "qty": "10",
            "taker_side": "buy",
            "ts_event": stamp,
        },
        "book_ticker": {
            "source": SOURCE,
            "symbol": SYMBOL,
            "update_id": 1,
            "bid_price": "180.4",
            "bid_qty": "5",
            "ask_price": "180.6",
            "ask_qty": "7",
            "ts_init": stamp,
        },
        "bar": {
            "source": SOURCE,
            "symbol": SYMBOL,
            "interval": "1m",
            "ts_event": stamp,
            "ts_close": (ts + timedelta(seconds=59, milliseconds=999)).isoformat(),
            "open": "180",
            "high": "181",
            "low": "179",
            "close": "180.5",
            "volume": "100",
        },
        "book": {
            "source": SOURCE,
            "symbol": SYMBOL,
            "update_id": 2,
            "synced_from": 1,
            "bids": [{"price": "180.4", "qty": "5"}],
            "asks": [],
            "ts_event": stamp,
        },
    }
    client = redis.Redis.from_url(redis_url)
    keys = []
    for kind, value in values.items():
        key = latest_key(SOURCE, SYMBOL, kind)
        # Held to its contract first: an invalid value would send every request the slow way
        # (it did: the book was not a BookSnapshot, so each request was validated and logged
        # twice, and the figure measured that).
        ITEMS[kind][0].model_validate(value)
        client.set(key, json.dumps(value))
        keys.append(key)
    client.close()
    return keys


def _load(target: str, env: dict[str, str]) -> float:
    """p99 latency in microseconds of ``target`` at RATE requests/s from another process."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.api_load", target, str(RATE), str(SECONDS)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    print(f"bench_api: {target.split('?')[0]}: {result.stderr.strip()}", file=sys.stderr)
    latencies = sorted(json.loads(result.stdout.splitlines()[-1]))
    return latencies[int(len(latencies) * 0.99) - 1]


def run() -> list[Figure]:
    import httpx2

    from quant_api import bars as bars_sql
    from quant_resources.migrations import ClickHouseLedger, load, migrate
    from quant_resources.warehouse import WarehouseResource, close_all_clients

    data = _bars()
    n = data.num_rows
    with tempfile.TemporaryDirectory(prefix="quant-bench-api-") as tmp:
        folder = Path(tmp)
        redis_server = RedisServer(folder / "redis")
        redis_server.start()
        redis_url = redis_server.url
        try:
            with warehouse_endpoint(folder / "served") as url:
                warehouse = WarehouseResource(url=url)
                migrations = load("clickhouse")
                migrate(ClickHouseLedger(warehouse), migrations, migrations[-1].key)
                warehouse.insert("bars_1m", data)
                warehouse.command("OPTIMIZE TABLE bars_1m FINAL")
                keys = _latest_values(redis_url, datetime(2024, 12, 31, 20, tzinfo=UTC))
                port = free_port()
                service = Child(
                    "quant serve api",
                    quant("serve", "api", "--port", str(port), "--log-level", "warning"),
                    None,
                    env={
                        "CLICKHOUSE_URL": url,
                        "REDIS_URL": redis_url,
                        "QUANT_API_TOKENS": TOKEN,
                        "LAKE_URL": f"file://{folder / 'lake'}",
                        "QUANT_HOME": str(folder / "home"),
                    },
                )
                base = f"http://127.0.0.1:{port}"
                try:
                    bars_rate, direct_rate = _bars_rates(
                        httpx2, base, warehouse, bars_sql, n, service
                    )
                    latest_p99 = _load(
                        f"{base}/v1/latest/{SYMBOL}?source={SOURCE}", {"QUANT_BENCH_TOKEN": TOKEN}
                    )
                    redis_p99 = _load(
                        "redis", {"REDIS_URL": redis_url, "QUANT_BENCH_KEYS": ",".join(keys)}
                    )
                    latest_url = f"{base}/v1/latest/{SYMBOL}?source={SOURCE}"
                    # An extra query parameter: the route ignores it, the early answer declines.
                    # Alternated, the least of three each: the least disturbed by the machine.
                    early_cpu = routed_cpu = float("inf")
                    for _ in range(3):
                        early_cpu = min(
                            early_cpu, _server_cpu_per_request(httpx2, latest_url, service.pid)
                        )
                        routed_cpu = min(
                            routed_cpu,
                            _server_cpu_per_request(httpx2, latest_url + "&x=1", service.pid),
                        )
                finally:
                    service.stop()
                close_all_clients()
        finally:
            redis_server.stop()
    return [
        Figure(
            name=f"/v1/bars Arrow, one symbol-year of 1m bars ({n:,} rows, one page; "
            f"median ratio of {ROUNDS} back-to-back rounds)",
            unit="rows/s",
            ours=bars_rate,
            peer_name="WarehouseResource.query_arrow, same SQL",
            peer=direct_rate,
            goal=">= 0.8x",
        ),
        Figure(
            name=f"/v1/latest p99 at {RATE} req/s from a second process (all from Redis)",
            unit="µs",
            ours=latest_p99,
            peer_name="redis-py MGET of the same keys, same rate",
            peer=redis_p99,
            goal="< 5,000 µs",
            higher_is_better=False,
        ),
        Figure(
            name=f"/v1/latest CPU of the service per request (least of 3 x {CPU_REQUESTS:,})",
            unit="µs",
            ours=early_cpu,
            peer_name="the same request through FastAPI's routing and dependencies",
            peer=routed_cpu,
            goal="what lets it keep 500 req/s on a busy machine",
            higher_is_better=False,
        ),
    ]


def _server_cpu_per_request(httpx2, url: str, pid: int) -> float:
    """CPU time (user + system) the service process spent per request, over CPU_REQUESTS
    sequential requests: unlike latency, barely moved by other processes on the machine."""
    with httpx2.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
        for _ in range(50):
            assert http.get(url).status_code == 200
        before = _cpu_seconds(pid)
        for _ in range(CPU_REQUESTS):
            assert http.get(url).status_code == 200
        return (_cpu_seconds(pid) - before) / CPU_REQUESTS * 1e6


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _bars_rates(httpx2, base, warehouse, bars_sql, n, service) -> tuple[float, float]:
    import time

    with httpx2.Client(
        base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    ) as http:
        deadline = time.monotonic() + 90
        while True:  # the service answers once uvicorn is up
            try:
                if http.get("/v1/health").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if service.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("quant serve api did not start:\n" + "".join(service.lines))
            time.sleep(0.1)
        params = {
            "symbol": SYMBOL,
            "source": SOURCE,
            "start": "2024-01-01T00:00:00Z",
            "end": "2025-01-01T00:00:00Z",
            "limit": 100_000,
        }

        def through_api() -> int:
            response = http.get(
                "/v1/bars", params=params, headers={"Accept": "application/vnd.apache.arrow.stream"}
            )
            assert response.status_code == 200, response.text
            assert "x-next-cursor" not in response.headers
            got = pa.ipc.open_stream(response.content).read_all().num_rows
            assert got == n, got
            return got

        query = bars_sql.BarsQuery(
            SOURCE,
            SYMBOL,
            bars_sql.Interval.M1,
            datetime(2024, 1, 1, tzinfo=UTC),
            datetime(2025, 1, 1, tzinfo=UTC),
        )
        sql_params = {
            "source": SOURCE,
            "symbol": SYMBOL,
            "lo": datetime(2024, 1, 1, tzinfo=UTC),
            "hi": datetime(2025, 1, 1, tzinfo=UTC),
            "limit": 100_001,
        }
        assert query.lo_ms == int(sql_params["lo"].timestamp() * 1000)

        def direct() -> int:
            got = warehouse.query_arrow(bars_sql.SQL_1M, sql_params).num_rows
            assert got == n, got
            return got

        through_api(), direct()  # warm both paths
        return interleaved_rates(through_api, direct, ROUNDS)


def interleaved_rates(ours, peer, rounds: int) -> tuple[float, float]:
    """Rows/s of ``ours`` and ``peer`` timed back to back in each of ``rounds`` rounds (which
    goes first alternates), as the round of the median ratio. Timed in two separate blocks,
    as before, the load of a shared machine moved between the blocks and the ratio with it
    (0.56x idle, 1.21x under load); within one round both see the same machine."""
    import time

    pairs = []
    for index in range(rounds):
        rates = {}
        for name, work in (("ours", ours), ("peer", peer))[:: 1 if index % 2 else -1]:
            start = time.perf_counter()
            rates[name] = work() / (time.perf_counter() - start)
        pairs.append((rates["ours"] / rates["peer"], rates["ours"], rates["peer"]))
    print(
        "bench_api: /v1/bars / query_arrow by round: "
        + ", ".join(f"{ratio:.2f}x" for ratio, _, _ in pairs),
        file=sys.stderr,
    )
    _, ours_rate, peer_rate = sorted(pairs)[len(pairs) // 2]
    return ours_rate, peer_rate


if __name__ == "__main__":
    for figure in run():
        print(figure.as_dict())
