"""Historical equities and options (group ``historical``): daily NYSE-session partitions.

Each partition is one session for the whole universe. A materialisation validates what the
provider returned *before* writing (a bad bar fails the partition, naming symbol and
timestamp, and the previous content stays), then replaces the Parquet lake files (one per
source and day) and the (source, day) slice of the ClickHouse table, both at once. A run of
many sessions fetches them in pieces: while the next piece is being fetched, the last one is
validated and staged in ClickHouse; nothing is published until every piece is in.
The checks judge what was stored: for 1-minute bars, the written frame once ClickHouse has
shown that the slice holds exactly it (``_as_stored``), else the stored rows read back.
"""

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from quant_assets.config import equity_symbols, option_underlyings
from quant_assets.metadata import frame_summary, price_chart
from quant_assets.partitions import trading_day_partitions
from quant_assets.quality_checks import (
    BAR_CHECKS,
    QUOTE_CHECKS,
    BarFindings,
    bar_check_results,
    bar_findings,
    check_specs,
    quote_check_results,
)
from quant_assets.schema import clickhouse_schema
from quant_core.calendar import NEW_YORK, TradingSession, session
from quant_core.quality import duplicate_findings, ohlc_findings
from quant_core.quality import quote_findings as quote_rule_findings
from quant_resources.lake import LakeResource
from quant_resources.market import MarketDataResource
from quant_resources.warehouse import StagedSlice, WarehouseResource

SCHEMA_DEPS = [
    dg.AssetDep(clickhouse_schema, partition_mapping=dg.AllPartitionMapping()),
]
BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=25)
# Bars per provider request in a many-session run: the next piece is fetched while the last
# one is judged and staged.
PIECE_BARS = 60_000
MAX_DAY_RUNS = 4096
BAR_SLICE = "source = {src:String} AND session_date IN {days:Array(Date)} AND interval = '1m'"
SNAPSHOT_SLICE = (
    "source = {src:String} AND session_date = {d:Date} AND snapshot_ts = {at:DateTime64(3, 'UTC')}"
)


class BarsConfig(dg.Config):
    adjustment: str = Field(
        default="raw", description="raw (default), split, dividend or all (Alpaca adjustments)"
    )


class SnapshotConfig(dg.Config):
    at: str | None = Field(
        default=None,
        description="HH:MM New York time of the snapshot; default now during the session "
        "(providers with history, i.e. synthetic, default to the last minute of past sessions)",
    )


def _sessions(context: dg.AssetExecutionContext, now: datetime) -> list[TradingSession]:
    sessions = [session(date.fromisoformat(k)) for k in context.partition_keys]
    for sess in sessions:
        if sess.post_close > now:
            raise dg.Failure(
                f"partition {sess.day} has not ended yet (post-market closes "
                f"{sess.post_close.isoformat()}); its bars are final only after that"
            )
    return sessions


def _refuse(findings, what: str) -> None:
    if findings:
        listed = "; ".join(str(f) for f in findings[:10])
        raise dg.Failure(f"{what}: {len(findings)} invalid rows, nothing written. {listed}")


def _write_lake(
    lake: LakeResource, dataset: str, source: str, table: pa.Table, days: list[date]
) -> int:
    """One Parquet file per (source, day) partition, ``dataset/source=S/date=D/part.parquet``,
    rows in the table's order; written by a few threads (Parquet encoding releases the GIL).
    Anything else under a day's folder (per-symbol files of the earlier layout) is removed
    once the new file is in place, and a day without rows is left empty."""
    by_day = _split_by_day(table)
    keys = {day: lake.key(dataset, source, day) for day in days}

    def write(day: date) -> None:
        if day in by_day:
            lake.write_parquet(keys[day], by_day[day])
        prefix = f"{dataset}/source={source}/date={day.isoformat()}/"
        for stale in set(lake.list(prefix)) - ({keys[day]} if day in by_day else set()):
            lake.delete_prefix(stale)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(write, days))
    return sum(day in by_day for day in days)


def _split_by_day(table: pa.Table) -> dict[date, pa.Table]:
    """Rows per session date, each day keeping the table's row order. A provider's frame is
    ordered by symbol, then time, so a day is a few runs of rows: those are sliced without a
    copy. A frame in any other order (many short runs) is sorted once by day instead."""
    days = pc.cast(table.column("session_date"), pa.int32()).to_numpy()
    epoch = date(1970, 1, 1)
    edges = np.flatnonzero(days[1:] != days[:-1]) + 1
    if edges.size > MAX_DAY_RUNS:
        order = np.argsort(days, kind="stable")
        table, days = table.take(order), days[order]
        edges = np.flatnonzero(days[1:] != days[:-1]) + 1
    runs: dict[int, list[pa.Table]] = {}
    for start, end in zip(np.r_[0, edges], np.r_[edges, days.size], strict=True):
        if end > start:
            runs.setdefault(int(days[start]), []).append(table.slice(start, end - start))
    return {
        epoch + timedelta(days=day): pa.concat_tables(parts) for day, parts in sorted(runs.items())
    }


def _stored(warehouse: WarehouseResource, table: str, source: str, days: list[date]) -> pa.Table:
    return warehouse.query_arrow(
        f"SELECT * FROM {table} WHERE source = {{src:String}} AND "
        "session_date IN {days:Array(Date)} ORDER BY symbol, ts",
        {"src": source, "days": days},
    )


# Distinct keys are counted by their 64-bit hash (several times cheaper than the tuples): a
# collision can only make the count look short, which reads the slice back; never the reverse.
FINGERPRINT = (
    "count(), uniqExact(cityHash64(symbol, ts)), toUnixTimestamp64Milli(min(ts)), "
    "toUnixTimestamp64Milli(max(ts)), sum(open), sum(high), sum(low), "
    "sum(close), sum(volume), sum(trade_count)"
)


def _fingerprint(bars: pa.Table) -> tuple:
    """What FINGERPRINT computes, on a frame without duplicate (symbol, ts)."""
    lo, hi = pc.min_max(pc.cast(bars.column("ts"), pa.int64())).values()
    sums = [
        pc.sum(bars.column(c)).as_py()
        for c in ("open", "high", "low", "close", "volume", "trade_count")
    ]
    return (bars.num_rows, bars.num_rows, lo.as_py(), hi.as_py(), *sums)


def _as_stored(
    warehouse: WarehouseResource, table: str, source: str, days: list[date], written: pa.Table
) -> pa.Table:
    """The frame the checks evaluate: ``written`` when ClickHouse shows that the slice holds
    exactly it (same row count, distinct keys, time range and exact column sums, aggregated
    on the server), else the stored rows read back, so that leftovers or a concurrent writer
    are judged on what is really there. Reading 200,000 bars back costs more than the write."""
    sql = f"SELECT {FINGERPRINT} FROM {table} WHERE {BAR_SLICE}"
    stored = warehouse.query_rows(sql, {"src": source, "days": days})[0]
    if written.num_rows and tuple(stored) == _fingerprint(written):
        return written
    return _stored(warehouse, table, source, days)


def _chart(bars: pa.Table, symbol: str, day: date) -> dg.MetadataValue | None:
    mask = pc.and_(
        pc.equal(bars.column("symbol"), symbol),
        pc.equal(bars.column("session_date"), pa.scalar(day, pa.date32())),
    )
    one = bars.filter(mask).sort_by("ts")
    return price_chart(one, f"{symbol} {day}") if one.num_rows else None


@dataclass(frozen=True)
class _Piece:
    bars: pa.Table
    found: BarFindings


def _pieces(sessions: list[TradingSession], symbols: list[str]) -> list[list[TradingSession]]:
    minutes = max((s.post_close - s.pre_open) // timedelta(minutes=1) for s in sessions)
    per = max(1, PIECE_BARS // (len(symbols) * minutes))
    return [sessions[i : i + per] for i in range(0, len(sessions), per)]


def _judge_piece(
    stage: StagedSlice,
    bars: pa.Table,
    sessions: list[TradingSession],
    symbols: list[str],
    what: str,
) -> _Piece:
    """Validate one piece and stage it in ClickHouse; its findings become the check results
    if ClickHouse shows that the slice holds exactly it."""
    found = bar_findings(bars, sessions, symbols)
    _refuse(found.ohlc, what)
    _refuse(found.duplicates, what)
    _refuse(found.outside, what)
    stage.add(bars)
    return _Piece(bars, found)


def _fetch_and_judge(
    market_data: MarketDataResource,
    symbols: list[str],
    sessions: list[TradingSession],
    adjustment: str,
    what: str,
    stage: StagedSlice,
) -> list[_Piece]:
    """The run's bars, requested a few sessions at a time: while the next piece is being
    fetched, a worker judges the last one (refusing the run if anything is wrong) and stages
    it. Nothing is published here."""
    with ThreadPoolExecutor(max_workers=1) as worker:
        judged: list[Future[_Piece]] = []
        try:
            for part in _pieces(sessions, symbols):
                bars = market_data.stock_bars_1m(
                    symbols, part[0].pre_open, part[-1].post_close, adjustment
                )
                judged.append(worker.submit(_judge_piece, stage, bars, part, symbols, what))
                for done in judged:  # a refused piece stops the fetch at once
                    if done.done():
                        done.result()
            return [f.result() for f in judged]
        except BaseException:
            worker.shutdown(cancel_futures=True)
            raise


@dg.asset(
    group_name="historical",
    partitions_def=trading_day_partitions,
    backfill_policy=BACKFILL,
    deps=SCHEMA_DEPS,
    check_specs=check_specs("stock_bars_1m", BAR_CHECKS),
    kinds={"clickhouse", "parquet"},
    description="1-minute equity bars, regular and extended hours, one NYSE session per "
    "partition, for the whole universe (ClickHouse bars_1m + lake bars_1m/).",
)
def stock_bars_1m(
    context: dg.AssetExecutionContext,
    config: BarsConfig,
    market_data: MarketDataResource,
    warehouse: WarehouseResource,
    lake: LakeResource,
) -> dg.MaterializeResult:
    sessions = _sessions(context, datetime.now(UTC))
    symbols = equity_symbols()
    source = market_data.source
    days = [s.day for s in sessions]
    what = f"{source} bars of {days[0]}..{days[-1]}"
    # One slice replacement (one mutation) for the run's whole range. The lake files are
    # encoded and written while ClickHouse moves the staged pieces into bars_1m (both release
    # the GIL).
    with ThreadPoolExecutor(max_workers=1) as pool:
        slice_params = {"src": source, "days": days}
        with warehouse.slice_replacement("bars_1m", BAR_SLICE, slice_params) as stage:
            pieces = _fetch_and_judge(
                market_data, symbols, sessions, config.adjustment, what, stage
            )
            bars = pa.concat_tables([p.bars for p in pieces])
            files = pool.submit(_write_lake, lake, "bars_1m", source, bars, days)
        checked = _as_stored(warehouse, "bars_1m", source, days, bars)
        metadata = {**frame_summary(bars), "source": source, "days": len(days)}
        chart = _chart(pieces[-1].bars, symbols[0], days[-1])
        if chart is not None:
            metadata["chart"] = chart
        context.log.info(
            f"{what}: {bars.num_rows} bars of {len(symbols)} symbols -> ClickHouse bars_1m, "
            f"lake ({files.result()} files)"
        )
    found = sum((p.found for p in pieces[1:]), pieces[0].found) if checked is bars else None
    return dg.MaterializeResult(
        metadata=metadata, check_results=bar_check_results(checked, sessions, symbols, found)
    )


DAILY_SQL = """
SELECT source, symbol, '1d' AS interval, min(t) AS ts, max(t_close) AS ts_close,
       session_date, 'regular' AS session,
       argMin(o, t) AS open, max(h) AS high, min(l) AS low, argMax(c, t) AS close,
       sum(v) AS volume, sum(qv) AS quote_volume,
       if(volume > 0, toDecimal128(quote_volume / volume, 8), close) AS vwap,
       sum(n) AS trade_count, sum(tbv) AS taker_buy_volume, sum(tbqv) AS taker_buy_quote_volume,
       any(adj) AS adjustment, any(f) AS adj_factor
FROM (
    SELECT source, symbol, session_date, ts AS t, ts_close AS t_close, open AS o, high AS h,
           low AS l, close AS c, volume AS v, quote_volume AS qv, trade_count AS n,
           taker_buy_volume AS tbv, taker_buy_quote_volume AS tbqv, adjustment AS adj,
           adj_factor AS f
    FROM bars_1m FINAL
    WHERE source = {src:String} AND session_date = {d:Date} AND interval = '1m'
      AND session = 'regular'
)
GROUP BY source, symbol, session_date
ORDER BY symbol
"""


@dg.asset(
    group_name="historical",
    partitions_def=trading_day_partitions,
    backfill_policy=BACKFILL,
    deps=[stock_bars_1m, *SCHEMA_DEPS],
    check_specs=[
        dg.AssetCheckSpec("agrees_with_1m", asset="stock_bars_1d", blocking=True),
        dg.AssetCheckSpec("ohlc_valid", asset="stock_bars_1d", blocking=True),
    ],
    kinds={"clickhouse", "parquet"},
    description="Daily bars of the regular session, derived from stock_bars_1m in ClickHouse.",
)
def stock_bars_1d(
    context: dg.AssetExecutionContext,
    market_data: MarketDataResource,
    warehouse: WarehouseResource,
    lake: LakeResource,
) -> dg.MaterializeResult:
    source = market_data.source
    days = [date.fromisoformat(k) for k in context.partition_keys]
    for day in days:
        daily = warehouse.query_arrow(DAILY_SQL, {"src": source, "d": day})
        if daily.num_rows == 0:
            raise dg.Failure(f"no regular-session {source} bars for {day}: run stock_bars_1m")
        daily = daily.drop_columns([c for c in ("version",) if c in daily.column_names])
        _write_lake(lake, "bars_1d", source, daily, [day])
        warehouse.replace_slice(
            "bars_1d",
            "source = {src:String} AND session_date = {d:Date}",
            {"src": source, "d": day},
            daily,
        )
    stored = _stored(warehouse, "bars_1d", source, days)
    again = pa.concat_tables(
        [warehouse.query_arrow(DAILY_SQL, {"src": source, "d": d}) for d in days]
    )
    cols = ["symbol", "session_date", "open", "high", "low", "close", "volume", "trade_count"]
    agree = stored.select(cols).sort_by([("symbol", "ascending"), ("session_date", "ascending")])
    expect = again.select(cols).sort_by([("symbol", "ascending"), ("session_date", "ascending")])
    findings = ohlc_findings(stored)
    return dg.MaterializeResult(
        metadata={**frame_summary(stored), "source": source},
        check_results=[
            dg.AssetCheckResult(
                check_name="agrees_with_1m",
                passed=agree.equals(expect),
                metadata={"daily_rows": stored.num_rows, "recomputed_rows": again.num_rows},
            ),
            dg.AssetCheckResult(
                check_name="ohlc_valid",
                passed=not findings,
                metadata={"findings": dg.MetadataValue.json([str(f) for f in findings])},
            ),
        ],
    )


def _snapshot_time(config: SnapshotConfig, sess: TradingSession, now: datetime, live: bool):
    if config.at:
        clock = time.fromisoformat(config.at)
        at = datetime.combine(sess.day, clock, NEW_YORK).astimezone(UTC)
    elif sess.open <= now < sess.close:
        at = now.replace(second=0, microsecond=0)
    elif live:
        raise dg.Failure(
            f"Alpaca serves no historical option quotes: partition {sess.day} is not in "
            "regular trading hours now, and a snapshot can only be taken live"
        )
    else:
        at = sess.close - timedelta(minutes=1)  # synthetic history: the session's last minute
    if not sess.open <= at <= sess.close:
        raise dg.Failure(f"snapshot time {at.isoformat()} is outside the session of {sess.day}")
    if live and at > now:
        raise dg.Failure(f"snapshot time {at.isoformat()} is in the future")
    return at


@dg.asset(
    group_name="historical",
    partitions_def=trading_day_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
    deps=SCHEMA_DEPS,
    check_specs=check_specs("option_chain_snapshots", QUOTE_CHECKS),
    kinds={"clickhouse", "parquet"},
    description="Intraday snapshots of the option chain (quotes, IV, Greeks) of the configured "
    "underlyings; each materialisation appends one snapshot time to the day.",
)
def option_chain_snapshots(
    context: dg.AssetExecutionContext,
    config: SnapshotConfig,
    market_data: MarketDataResource,
    warehouse: WarehouseResource,
    lake: LakeResource,
) -> dg.MaterializeResult:
    now = datetime.now(UTC)
    sess = session(date.fromisoformat(context.partition_key))
    at = _snapshot_time(config, sess, now, live=market_data.source == "alpaca")
    frames = [market_data.option_chain_snapshot(u, at) for u in option_underlyings()]
    chain = pa.concat_tables(frames)
    _refuse(quote_rule_findings(chain), f"option chain at {at.isoformat()}")
    _refuse(
        duplicate_findings(chain, ("symbol", "snapshot_ts")), f"option chain at {at.isoformat()}"
    )
    source = market_data.source
    lake.write_parquet(
        lake.key("options_quotes", source, sess.day, part=f"snapshot-{at:%H%M}.parquet"), chain
    )
    warehouse.replace_slice(
        "options_quotes",
        SNAPSHOT_SLICE,
        {"src": source, "d": sess.day, "at": at},
        chain,
    )
    stored = _stored(warehouse, "options_quotes", source, [sess.day])
    snapshots = pc.unique(stored.column("snapshot_ts")).to_pylist()
    context.log.info(f"{sess.day} {at:%H:%M}Z: {chain.num_rows} quotes; {len(snapshots)} snapshots")
    return dg.MaterializeResult(
        metadata={
            **frame_summary(chain),
            "snapshot_ts": at.isoformat(),
            "snapshots_today": len(snapshots),
            "source": source,
        },
        check_results=quote_check_results(stored),
    )


@dg.asset(
    group_name="historical",
    partitions_def=trading_day_partitions,
    backfill_policy=BACKFILL,
    deps=[option_chain_snapshots, *SCHEMA_DEPS],
    check_specs=check_specs("option_bars_1m", BAR_CHECKS[:-1]),
    kinds={"clickhouse", "parquet"},
    description="1-minute bars of the option contracts seen in that day's chain snapshots.",
)
def option_bars_1m(
    context: dg.AssetExecutionContext,
    market_data: MarketDataResource,
    warehouse: WarehouseResource,
    lake: LakeResource,
) -> dg.MaterializeResult:
    sessions = _sessions(context, datetime.now(UTC))
    source = market_data.source
    for sess in sessions:
        contracts = [
            r[0]
            for r in warehouse.query_rows(
                "SELECT DISTINCT symbol FROM options_quotes WHERE source = {src:String} "
                "AND session_date = {d:Date} ORDER BY symbol",
                {"src": source, "d": sess.day},
            )
        ]
        if not contracts:
            raise dg.Failure(
                f"no {source} option chain snapshot for {sess.day}: "
                "materialise option_chain_snapshots for that day first"
            )
        bars = market_data.option_bars_1m(contracts, sess.open, sess.close)
        _refuse(ohlc_findings(bars), f"{source} option bars of {sess.day}")
        _refuse(duplicate_findings(bars, ("symbol", "ts")), f"{source} option bars of {sess.day}")
        _write_lake(lake, "option_bars_1m", source, bars, [sess.day])
        warehouse.replace_slice(
            "option_bars_1m", BAR_SLICE, {"src": source, "days": [sess.day]}, bars
        )
        context.log.info(f"{sess.day}: {bars.num_rows} option bars of {len(contracts)} contracts")
    stored = _stored(warehouse, "option_bars_1m", source, [s.day for s in sessions])
    return dg.MaterializeResult(
        metadata={**frame_summary(stored), "source": source},
        check_results=bar_check_results(stored, sessions, symbols=None),
    )


historical_assets = [stock_bars_1m, stock_bars_1d, option_chain_snapshots, option_bars_1m]
