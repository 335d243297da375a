"""Alpaca 1-minute bars end to end from the local simulator: ``AlpacaResource.stock_bars_1m``
(raw JSON -> numpy columns -> exact-decimal Arrow) against alpaca-py's default path
(``get_stock_bars(StockBarsRequest(...)).df``: a pydantic ``Bar`` per bar, then pandas) on the
same requests. Both pay the same HTTP and JSON costs; the simulator's cache is warmed first.

The backfill figure is the wall time of one whole Dagster run (``dg.materialize`` of
``stock_bars_1m`` over the 20-session range, as the backfill policy batches it): run creation,
the planned/materialisation/check events of every partition, the fetch (in pieces of a few
sessions, each validated and staged in ClickHouse while the next is fetched), the Parquet
lake, the ClickHouse (chDB) slice replacement, checks and metadata. The Dagster instance is
created once before timing, as a deployment's instance exists before a backfill starts.

Every figure here is the best of ``REPEAT`` runs, ours and alpaca-py's alike: this machine's
speed swings by up to 1.5x within minutes, and the fastest run is the least disturbed one
(the first backfill replaces nothing, later ones replace a full slice).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from alpaca.data.enums import DataFeed
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame

from benchmarks.report import Figure, best_rate
from quant_core.calendar import trading_days
from quant_dev.alpaca_sim import process
from quant_resources.alpaca import AlpacaResource

SYMBOLS = [f"S{i:02d}" for i in range(20)]
FIRST_DAY = date(2024, 7, 1)
DAYS = 20
REPEAT = 5


def _window() -> tuple[datetime, datetime]:
    days = trading_days(FIRST_DAY, FIRST_DAY + timedelta(days=40))[:DAYS]
    start = datetime.combine(days[0], datetime.min.time(), UTC)
    return start, datetime.combine(days[-1] + timedelta(days=1), datetime.min.time(), UTC)


def run() -> list[Figure]:
    start, end = _window()
    with process.running("--now", (end + timedelta(days=7)).isoformat()) as sim:
        ours = AlpacaResource(api_key="test", secret_key="test", data_url=sim.url)
        peer = StockHistoricalDataClient("test", "test", url_override=sim.url)
        request = StockBarsRequest(
            symbol_or_symbols=SYMBOLS,
            timeframe=TimeFrame.Minute,
            start=start,
            end=end,
            feed=DataFeed.IEX,
        )

        def fetch_ours() -> int:
            return ours.stock_bars_1m(SYMBOLS, start, end).num_rows

        def fetch_peer() -> int:
            return len(peer.get_stock_bars(request).df)

        expected = fetch_ours()  # also warms the simulator's cache
        if fetch_peer() != expected:
            raise AssertionError("alpaca-py and AlpacaResource disagree on the bar count")
        ours_rate = best_rate(fetch_ours, REPEAT)
        peer_rate = best_rate(fetch_peer, REPEAT)
        backfill_rate = _backfill_rate(sim.url, start, end, expected)
    return [
        Figure(
            name=f"backfill end to end into lake + ClickHouse ({expected:,} bars)",
            unit="bars/s",
            ours=backfill_rate,
            peer_name="alpaca-py get_stock_bars(...).df (fetch only)",
            peer=peer_rate,
            goal=">= 200,000 bars/s and >= 3x",
        ),
        Figure(
            name=f"Alpaca 1m bars, {len(SYMBOLS)} symbols x {DAYS} days ({expected:,} bars)",
            unit="bars/s",
            ours=ours_rate,
            peer_name="alpaca-py get_stock_bars(...).df",
            peer=peer_rate,
            goal=">= 200,000 bars/s and >= 3x",
        ),
    ]


def _backfill_rate(url: str, start: datetime, end: datetime, expected: int) -> float:
    """stock_bars_1m over the whole window as one Dagster run (the backfill policy's batch):
    fetch, validate, write the Parquet lake and replace the ClickHouse slice (chDB)."""
    import os
    import tempfile
    import time

    import dagster as dg

    from quant_assets.historical import stock_bars_1m
    from quant_assets.schema import clickhouse_schema
    from quant_resources.lake import LakeResource
    from quant_resources.migrations import load
    from quant_resources.store import HistoricalStore
    from quant_resources.warehouse import WarehouseResource

    days = trading_days(start.date(), (end - timedelta(days=1)).date())
    os.environ["QUANT_EQUITY_SYMBOLS"] = ",".join(SYMBOLS)
    with tempfile.TemporaryDirectory(prefix="quant-bench-backfill-") as tmp:
        warehouse = WarehouseResource(url=f"chdb://{tmp}/chdb?database=bench")
        resources = {
            "warehouse": warehouse,
            "store": HistoricalStore(
                warehouse=warehouse, lake=LakeResource(url=f"file://{tmp}/lake")
            ),
            "market_data": AlpacaResource(api_key="test", secret_key="test", data_url=url),
        }
        instance = dg.DagsterInstance.ephemeral()
        dg.materialize(
            [clickhouse_schema],
            partition_key=load("clickhouse")[-1].key,
            resources=resources,
            instance=instance,
        )
        best = 0.0
        for _ in range(REPEAT):
            began = time.perf_counter()
            result = dg.materialize(
                [stock_bars_1m],
                resources=resources,
                instance=instance,
                tags={
                    "dagster/asset_partition_range_start": days[0].isoformat(),
                    "dagster/asset_partition_range_end": days[-1].isoformat(),
                },
            )
            seconds = time.perf_counter() - began
            # One materialization per partition (day), each with its own count.
            events = result.asset_materializations_for_node("stock_bars_1m")
            stored = sum(event.metadata["rows"].value for event in events)
            if stored != expected:
                raise AssertionError(f"backfill stored {stored} bars, expected {expected}")
            best = max(best, expected / seconds)
        return best


if __name__ == "__main__":
    for figure in run():
        print(figure.as_dict())
