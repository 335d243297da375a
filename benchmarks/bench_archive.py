"""Binance archive history: one day of aggTrades from the local archive simulator parsed to
Arrow, and batch 1m bars of 10,000,000 trades.

Parse. Ours: ``quant_core.formats.binance_archive.read_table`` on the zip's CSV member,
streamed out of the zip (exact scaled ints, every value and timestamp checked). Peer:
``pandas.read_csv`` of the same member (floats, nothing checked), the usual first attempt.
The day (``DAY_AGGS`` aggregates) comes once from ``quant sim binance-archive`` over HTTP,
verified against its checksum by ``ArchiveClient``; the simulator takes ~20 s to generate it.

End to end. Ours: ``dagster.materialize`` of ``crypto_trades`` + ``crypto_bars_1m`` for the
day (download from the simulator, checksum, parse, stage, batch bars, publish to ClickHouse
``trades`` and ``bars_1m`` through HistoricalStore, lake files). Peer: ``pandas.read_csv`` of
the same (already downloaded) file and ``insert_df`` into a copy of ``trades`` (floats, no
checks, no bars, no lake), the usual first attempt. Both into the same chDB warehouse.

Stages (arch3). After the end-to-end figure, the same day is taken through the asset's own
functions one stage at a time (``stage_seconds``: download + sha256, unzip, CSV parse, checks +
exact scaled ints, trade rows, bars, lake Parquet, ClickHouse insert, store hand-over); each is
printed with its share of the end-to-end time and is a figure of its own. In the asset the lake
encoding overlaps the insert, so "the rest" (end to end minus the stages) is Dagster's cost
minus that overlap.

Bars. Ours: ``quant_core.bars_batch.aggregate_batch`` (Arrow table in, ``BARS_1M`` out; exact,
with de-duplication). Peer: a plain polars ``group_by`` over (symbol, minute) of the same rows
computing the same sums (Int128 price x qty), on a DataFrame built before the clock starts,
without de-duplication or rounding.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import tempfile
import time
import zipfile
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa

from benchmarks.report import Figure, best_rate
from quant_core.bars import aggregate_trades
from quant_core.bars_batch import aggregate_batch
from quant_core.formats.binance_archive import Period, file_name, member_name, read_table
from quant_dev.processes import archive_simulator
from quant_resources.binance_archive import ArchiveClient

DAY = date(2024, 8, 8)
DAY_AGGS = 2_000_000
BAR_TRADES = 10_000_000
REFERENCE_TRADES = 2_000_000
T0 = 1_723_075_200_000


def _fetch_day(target: Path) -> tuple[Path, float]:
    args = ["--symbols", "btcusdt", "--first", DAY.isoformat(), "--last", DAY.isoformat()]
    with archive_simulator(*args, "--aggs-per-day", str(DAY_AGGS)) as (_, url):
        client = ArchiveClient(url, timeout_seconds=600, attempts=1)
        with client.download("aggTrades", "BTCUSDT", Period.day(DAY)) as path:
            kept = target / path.name
            shutil.copyfile(path, kept)
        start = time.perf_counter()
        rows = client.day("aggTrades", "BTCUSDT", DAY).num_rows  # cached by the sim now
        fetch_rate = rows / (time.perf_counter() - start)
    return kept, fetch_rate


def parse_figures() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        path, fetch_rate = _fetch_day(Path(tmp))
        member = member_name(file_name("aggTrades", "BTCUSDT", Period.day(DAY)))
        archive = zipfile.ZipFile(path)

        def ours() -> int:
            return read_table(
                lambda: archive.open(member), "aggTrades", "BTCUSDT", Period.day(DAY), member
            ).num_rows

        def peer() -> int:
            with archive.open(member) as stream:
                return len(pd.read_csv(stream, header=None))

        rows = ours()
        assert rows == DAY_AGGS == peer()
        ours_rate, peer_rate = best_rate(ours), best_rate(peer)
    return [
        Figure(
            f"archive aggTrades day -> Arrow, exact and checked ({DAY_AGGS:,} rows, from zip)",
            "trades/s",
            ours_rate,
            "pandas.read_csv (floats, unchecked)",
            peer_rate,
            "informational (exact and checked, vs floats unchecked)",
        ),
        Figure(
            "archive day download + sha256 + unzip + parse over loopback (ArchiveClient.day)",
            "trades/s",
            fetch_rate,
            "parse only (the row above)",
            ours_rate,
            "informational (what the transfer and checksum add)",
        ),
    ]


AGG_COLUMNS = [
    "trade_id",
    "price",
    "qty",
    "first_trade_id",
    "last_trade_id",
    "time",
    "maker",
    "best",
]


def end_to_end_figures(day_aggs: int = DAY_AGGS, repeat: int = 3) -> list[Figure]:
    import dagster as dg

    from quant_assets.crypto_history import crypto_archive_trades
    from quant_assets.schema import clickhouse_schema
    from quant_resources.binance_archive import BinanceArchiveResource
    from quant_resources.lake import LakeResource
    from quant_resources.migrations import load
    from quant_resources.store import HistoricalStore
    from quant_resources.warehouse import WarehouseResource

    os.environ["QUANT_CRYPTO_SYMBOLS"] = "BTCUSDT"
    args = ["--symbols", "btcusdt", "--first", DAY.isoformat(), "--last", DAY.isoformat()]
    with (
        archive_simulator(*args, "--aggs-per-day", str(day_aggs)) as (_, url),
        tempfile.TemporaryDirectory(prefix="quant-bench-archive-") as tmp,
    ):
        warehouse = WarehouseResource(url=f"chdb://{tmp}/chdb?database=bench")
        lake = LakeResource(url=f"file://{tmp}/lake")
        resources = {
            "warehouse": warehouse,
            "store": HistoricalStore(warehouse=warehouse, lake=lake),
            "binance_archive": BinanceArchiveResource(base_url=url, timeout_seconds=600),
        }
        instance = dg.DagsterInstance.ephemeral()
        dg.materialize(
            [clickhouse_schema],
            partition_key=load("clickhouse")[-1].key,
            resources=resources,
            instance=instance,
        )

        def ours() -> int:
            result = dg.materialize(
                [crypto_archive_trades],
                partition_key=DAY.isoformat(),
                resources=resources,
                instance=instance,
            )
            rows = result.asset_materializations_for_node("crypto_archive_trades")[0]
            assert rows.metadata["rows"].value == day_aggs
            return day_aggs

        ours()  # the simulator generates and caches the day once
        ours_rate = best_rate(ours, repeat)
        with (
            ArchiveClient(url, timeout_seconds=600) as fetcher,
            fetcher.download("aggTrades", "BTCUSDT", Period.day(DAY)) as path,
        ):
            kept = Path(tmp) / path.name
            shutil.copyfile(path, kept)
        member = member_name(kept.name)
        warehouse.command("CREATE TABLE IF NOT EXISTS trades_peer AS trades")
        client = warehouse.client

        def peer() -> int:
            warehouse.command("TRUNCATE TABLE trades_peer")
            with zipfile.ZipFile(kept) as archive, archive.open(member) as stream:
                frame = pd.read_csv(stream, header=None, names=AGG_COLUMNS)
            ts = pd.to_datetime(frame["time"], unit="ms", utc=True)
            df = pd.DataFrame(
                {
                    "source": "pandas",
                    "symbol": "BTCUSDT",
                    "stream": "aggTrade",
                    "trade_id": frame["trade_id"],
                    "first_trade_id": frame["first_trade_id"],
                    "last_trade_id": frame["last_trade_id"],
                    "price": frame["price"],
                    "qty": frame["qty"],
                    "is_buyer_maker": frame["maker"],
                    "ts": ts,
                    "ts_init": ts,
                    "session_id": kept.name,
                }
            )
            client.insert_df("trades_peer", df)
            return len(df)

        assert peer() == day_aggs
        peer_rate = best_rate(peer, repeat)
        stages = stage_seconds(url, resources["store"], day_aggs, repeat)
    print_stages(stages, day_aggs, ours_rate, peer_rate)
    return [
        Figure(
            f"archive day -> ClickHouse trades + bars + lake, end to end ({day_aggs:,} "
            "aggTrades, crypto_trades/crypto_bars_1m via dagster.materialize)",
            "trades/s",
            ours_rate,
            "pandas.read_csv + insert_df (trades only, floats, unchecked)",
            peer_rate,
            ">= 1,000,000 trades/s",
        ),
        *stage_figures(stages, day_aggs, ours_rate),
    ]


STAGES = (
    "download + sha256",
    "unzip",
    "parse (CSV to text columns)",
    "checks + exact scaled ints",
    "trade rows (Decimal128 columns)",
    "bars (aggregate_batch)",
    "lake Parquet encoding",
    "ClickHouse insert (bulk stage)",
    "store hand-over (attach, delete older, lake files)",
)


def stage_seconds(url: str, store, day_aggs: int, repeat: int = 2) -> dict[str, float]:
    """``crypto_archive_trades``' work for the day, one stage at a time (the fastest of
    ``repeat`` passes each). The asset runs the same functions; there the lake encoding
    overlaps the insert, here each stage is timed alone."""
    import io

    import pyarrow.csv as pacsv

    from quant_assets.crypto_history import archive_bars, archive_targets
    from quant_core.crypto_reconcile import archive_trade_rows
    from quant_resources.lake import encode_parquet
    from quant_resources.store import split_by_day

    period = Period.day(DAY)
    name = file_name("aggTrades", "BTCUSDT", period)
    trade_target, bar_target = archive_targets([DAY], ["BTCUSDT"])
    best = dict.fromkeys(STAGES, float("inf"))

    def timed(stage: str, work, *args):
        start = time.perf_counter()
        out = work(*args)
        best[stage] = min(best[stage], time.perf_counter() - start)
        return out

    def parquet(*tables: pa.Table) -> list[bytes]:
        return [encode_parquet(t) for p in tables for t in split_by_day(p).values()]

    text = pacsv.ConvertOptions(column_types={f"f{i}": pa.string() for i in range(8)})
    options = pacsv.ReadOptions(autogenerate_column_names=True)
    for _ in range(repeat):
        with ArchiveClient(url, timeout_seconds=600) as client:
            download = client.download("aggTrades", "BTCUSDT", period)
            path = timed(STAGES[0], download.__enter__)
            try:
                with zipfile.ZipFile(path) as archive:
                    raw = timed(STAGES[1], archive.read, member_name(name))
            finally:
                download.__exit__(None, None, None)
        timed(STAGES[2], pacsv.read_csv, io.BytesIO(raw), options, None, text)
        opener = functools.partial(io.BytesIO, raw)
        agg = timed(STAGES[3], read_table, opener, "aggTrades", "BTCUSDT", period, name)
        assert agg.num_rows == day_aggs
        rows = timed(STAGES[4], archive_trade_rows, agg, name)
        bars = timed(STAGES[5], archive_bars, agg)
        timed(STAGES[6], parquet, rows, bars)
        insert = handover = 0.0
        for target, table in ((trade_target, rows), (bar_target, bars)):
            replacement = store.replacement(target, holder="bench")
            stage = replacement.__enter__()
            start = time.perf_counter()
            stage.add(table)
            insert += time.perf_counter() - start
            start = time.perf_counter()
            replacement.__exit__(None, None, None)
            handover += time.perf_counter() - start
        best[STAGES[7]] = min(best[STAGES[7]], insert)
        best[STAGES[8]] = min(best[STAGES[8]], handover)
    # parse (CSV to text columns) is part of read_table: the checks are what it adds
    best[STAGES[3]] = max(best[STAGES[3]] - best[STAGES[2]], 0.0)
    return best


def print_stages(stages: dict[str, float], rows: int, ours: float, peer: float) -> None:
    total = rows / ours
    print(
        f"archive day, {rows:,} aggTrades: end to end {total:.3f} s ({ours:,.0f} trades/s, "
        f"{ours / peer:.2f}x pandas at {peer:,.0f}/s)"
    )
    for stage, seconds in stages.items():
        print(f"  {stage:<52} {seconds:8.3f} s  {100 * seconds / total:5.1f}%")
    rest = total - sum(stages.values())
    print(f"  {'the rest (dagster.materialize, overlap, checks)':<52} {rest:8.3f} s")


def stage_figures(stages: dict[str, float], rows: int, ours: float) -> list[Figure]:
    """Each stage as a rate (trades/s if the day took only that stage), against end to end."""
    return [
        Figure(
            f"archive day stage: {stage} ({seconds:.3f} s of {rows / ours:.3f} s)",
            "trades/s",
            rows / seconds if seconds else float("inf"),
            "end to end (the row above)",
            ours,
            "informational (where the time goes)",
        )
        for stage, seconds in stages.items()
    ]


def trades_table(n: int, seed: int = 3) -> pa.Table:
    """One symbol-day of n trades in time order (as an archive day is), ids increasing."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(T0, T0 + 86_400_000, n))
    return pa.table(
        {
            "symbol": pa.repeat(pa.scalar("BTCUSDT"), n),
            "trade_id": pa.array(np.arange(1, n + 1)),
            "price": pa.array(rng.integers(5_000_000_000_000, 7_000_000_000_000, n)),
            "qty": pa.array(rng.integers(1, 10**10, n)),
            "ts_event": pa.array(ts).cast(pa.timestamp("ms", tz="UTC")),
            "is_buyer_maker": pa.array(rng.random(n) < 0.5),
        }
    )


def polars_group_by(frame: pl.DataFrame) -> pl.DataFrame:
    pq = pl.col("price").cast(pl.Int128) * pl.col("qty")
    taker = ~pl.col("maker")
    return frame.group_by("symbol", "start").agg(
        open=pl.col("price").first(),
        high=pl.col("price").max(),
        low=pl.col("price").min(),
        close=pl.col("price").last(),
        volume=pl.col("qty").sum(),
        quote_volume=pq.sum(),
        trade_count=pl.len(),
        taker_buy_volume=pl.col("qty").filter(taker).sum(),
        taker_buy_quote_volume=pq.filter(taker).sum(),
    )


def bar_figures() -> list[Figure]:
    table = trades_table(BAR_TRADES)
    ts = table["ts_event"].cast(pa.int64()).to_numpy()
    frame = pl.DataFrame(
        {
            "symbol": table["symbol"],
            "start": ts - ts % 60_000,
            "price": table["price"],
            "qty": table["qty"],
            "maker": table["is_buyer_maker"],
        }
    )
    assert aggregate_batch(table).num_rows == polars_group_by(frame).height
    ours = best_rate(lambda: aggregate_batch(table).num_rows and BAR_TRADES)
    peer = best_rate(lambda: polars_group_by(frame).height and BAR_TRADES)
    small = table.slice(0, REFERENCE_TRADES)
    assert aggregate_batch(small).equals(aggregate_trades(small))
    fast_small = best_rate(lambda: aggregate_batch(small).num_rows and REFERENCE_TRADES)
    reference = best_rate(lambda: aggregate_trades(small).num_rows and REFERENCE_TRADES, 1)
    return [
        Figure(
            f"batch 1m bars, exact (aggregate_batch, {BAR_TRADES:,} trades)",
            "trades/s",
            ours,
            "polars group_by, same sums (no dedup, no rounding)",
            peer,
            ">= 1.0x polars group_by (time <= polars)",
        ),
        Figure(
            f"batch 1m bars vs the reference aggregate_trades ({REFERENCE_TRADES:,} trades)",
            "trades/s",
            fast_small,
            "quant_core.bars.aggregate_trades",
            reference,
            "informational (same bars, property-tested)",
        ),
    ]


def run() -> list[Figure]:
    return parse_figures() + end_to_end_figures() + bar_figures()


if __name__ == "__main__":  # a reduced run: python -m benchmarks.bench_archive AGGS
    for figure in end_to_end_figures(int(sys.argv[1]) if len(sys.argv) > 1 else DAY_AGGS):
        print(figure.as_dict())
