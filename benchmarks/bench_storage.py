"""Bars through the ``quant warehouse serve`` endpoint against clickhouse-connect's in-process chDB.

Both sides use clickhouse-connect (insert_arrow / query_arrow) on the same data; the endpoint adds
HTTP, compression and a second process. Goals: >= 0.5x in-process for inserts, >= 0.7x for Arrow
reads. ``QUANT_BENCH_ROWS`` sets the row count (default 2,000,000).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pyarrow as pa

from benchmarks.report import Figure, best_rate
from quant_dev.processes import warehouse_endpoint

BARS_DDL = (
    "CREATE TABLE {table} (source LowCardinality(String), symbol LowCardinality(String), "
    "ts DateTime64(3,'UTC'), open Float64, high Float64, low Float64, close Float64, "
    "volume Float64, trade_count UInt32) ENGINE=MergeTree ORDER BY (source, symbol, ts)"
)
REPEAT = 3


def bars_table(n: int, symbols: int = 50) -> pa.Table:
    rng = np.random.default_rng(7)
    per_symbol = -(-n // symbols)
    symbol_idx = np.repeat(np.arange(symbols), per_symbol)[:n]
    start = 1_704_067_200_000  # 2024-01-01, minute bars
    ts = start + 60_000 * (np.arange(n) % per_symbol)
    close = 100 + rng.standard_normal(n).cumsum() * 0.01
    return pa.table(
        {
            "source": pa.array(["bench"] * n).dictionary_encode(),
            "symbol": pa.DictionaryArray.from_arrays(
                pa.array(symbol_idx, pa.int32()), pa.array([f"SYM{i:03d}" for i in range(symbols)])
            ),
            "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "open": close,
            "high": close + 0.05,
            "low": close - 0.05,
            "close": close,
            "volume": rng.random(n) * 1000,
            "trade_count": pa.array(rng.integers(0, 500, n), pa.uint32()),
        }
    )


def _measure(client, data: pa.Table) -> tuple[float, float]:
    """Best insert and Arrow-read rates (rows/s) of ``client`` over ``data``."""
    n = data.num_rows
    tables = [f"bars_{i}" for i in range(REPEAT)]
    for table in tables:
        client.command(f"DROP TABLE IF EXISTS {table}")
        client.command(BARS_DDL.format(table=table))
    pending = iter(tables)

    def insert() -> int:
        client.insert_arrow(next(pending), data)
        return n

    def read() -> int:
        got = client.query_arrow("SELECT * FROM bars_0").num_rows
        assert got == n, got
        return got

    insert_rate = best_rate(insert, REPEAT)
    read_rate = best_rate(read, REPEAT)
    for table in tables:
        client.command(f"DROP TABLE {table}")
    return insert_rate, read_rate


def run() -> list[Figure]:
    import clickhouse_connect

    n = int(os.environ.get("QUANT_BENCH_ROWS", "2000000"))
    data = bars_table(n)
    with tempfile.TemporaryDirectory(prefix="quant-bench-") as tmp:
        with warehouse_endpoint(Path(tmp) / "served") as url:
            parts = urlsplit(url)
            port, password = parts.port, parts.password
            client = clickhouse_connect.get_client(
                host="127.0.0.1", port=port, username=parts.username, password=password
            )
            served = _measure(client, data)
            client.close()
            from quant_resources.warehouse import WarehouseResource, close_all_clients

            resource = WarehouseResource(url=urlunsplit(parts._replace(path="/bench_resource")))
            wrapped = _measure(_ResourceAsClient(resource), data)
            close_all_clients()
        local = clickhouse_connect.get_client(dsn=f"chdb://{Path(tmp) / 'inproc'}")
        inproc = _measure(local, data)
        local.close()
    peer = "clickhouse-connect chdb:// in-process"
    return [
        Figure(
            name=f"bars insert_arrow via warehouse endpoint ({n:,} rows)",
            unit="rows/s",
            ours=served[0],
            peer_name=peer,
            peer=inproc[0],
            goal=">= 0.5x in-process",
        ),
        Figure(
            name=f"bars query_arrow via warehouse endpoint ({n:,} rows)",
            unit="rows/s",
            ours=served[1],
            peer_name=peer,
            peer=inproc[1],
            goal=">= 0.7x in-process",
        ),
        Figure(
            name=f"WarehouseResource.insert over the endpoint ({n:,} rows)",
            unit="rows/s",
            ours=wrapped[0],
            peer_name="raw clickhouse-connect insert_arrow, same endpoint",
            peer=served[0],
            goal=">= 0.9x raw (adds < 10%)",
        ),
        Figure(
            name=f"WarehouseResource.query_arrow over the endpoint ({n:,} rows)",
            unit="rows/s",
            ours=wrapped[1],
            peer_name="raw clickhouse-connect query_arrow, same endpoint",
            peer=served[1],
            goal=">= 0.9x raw (adds < 10%)",
        ),
    ]


class _ResourceAsClient:
    """The resource behind the client calls ``_measure`` makes, so both run the same loop."""

    def __init__(self, resource) -> None:
        self.resource = resource

    def command(self, sql: str) -> None:
        self.resource.command(sql)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        self.resource.insert(table, data)

    def query_arrow(self, sql: str) -> pa.Table:
        return self.resource.query_arrow(sql)


if __name__ == "__main__":
    for figure in run():
        print(figure.as_dict())
