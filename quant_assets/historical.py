"""Historical equities and options (group ``historical``): daily NYSE-session partitions.

Each partition is one session for the whole universe. A materialisation validates what the
provider returned *before* writing (a bad bar fails the partition, naming symbol and
timestamp, and the previous content stays), then hands it to ``HistoricalStore``
(quant_resources/store.py), which replaces the (source, day) slice of the ClickHouse table
and the Parquet lake files (one per source and day) together, refusing answers that would
remove stored rows (``allow_empty_days`` / ``allow_missing_symbols`` in the run config
override that, with a warning). A run of many sessions fetches them in pieces: while the
next piece is being fetched, the last one is validated and staged in ClickHouse; nothing is
published until every piece is in. The assets validate and describe; the store writes.
The checks judge what was stored: for 1-minute bars, the written frame once ClickHouse has
shown that the slice holds exactly it (``_as_stored``), else the stored rows read back.

A run of many sessions (a backfill) still describes each session on its own: every partition's
materialisation carries that session's counts, time range, preview and chart, and every check
result is an evaluation of one partition (``partition_check_events``).
"""

import contextlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from quant_assets.config import equity_symbols, option_underlyings
from quant_assets.metadata import (
    chain_summary,
    frame_summary,
    price_chart,
    smile_chart,
)
from quant_assets.partitions import trading_day_partitions
from quant_assets.quality_checks import (
    BAR_CHECKS,
    QUOTE_CHECKS,
    BarFindings,
    bar_check_results,
    bar_findings,
    check_specs,
    findings_table,
    partition_check_events,
    quote_check_results,
)
from quant_assets.schema import clickhouse_schema
from quant_core.calendar import NEW_YORK, TradingSession, session
from quant_core.quality import duplicate_findings, ohlc_findings
from quant_core.quality import quote_findings as quote_rule_findings
from quant_resources.market import MarketDataResource
from quant_resources.store import (
    HistoricalStore,
    Publication,
    Replacement,
    Slice,
    StoreError,
    split_by_day,
)
from quant_resources.warehouse import WarehouseResource

SCHEMA_DEPS = [
    dg.AssetDep(clickhouse_schema, partition_mapping=dg.AllPartitionMapping()),
]
BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=25)
# IV smiles shown per underlying: the nearest expiries (each is one inline chart).
SMILES_PER_UNDERLYING = 4
# Bars per provider request in a many-session run: the next piece is fetched while the last
# one is judged and staged.
PIECE_BARS = 60_000
BAR_SLICE = "source = {src:String} AND session_date IN {days:Array(Date)} AND interval = '1m'"
SNAPSHOT_SLICE = (
    "source = {src:String} AND session_date = {d:Date} AND snapshot_ts = {at:DateTime64(3, 'UTC')}"
)


class ReplaceConfig(dg.Config):
    allow_empty_days: list[str] = Field(
        default_factory=list,
        description="Sessions (YYYY-MM-DD) whose empty answer may replace stored rows (e.g. "
        "every symbol delisted); logged as a warning and recorded in metadata",
    )
    allow_missing_symbols: list[str] = Field(
        default_factory=list,
        description="Symbols whose stored rows may be removed because the new answer has none "
        "(real delistings); logged as a warning and recorded in metadata",
    )

    def empty_days(self) -> list[date]:
        days = []
        for value in self.allow_empty_days:
            try:
                days.append(date.fromisoformat(value))
            except ValueError:
                raise dg.Failure(
                    f"allow_empty_days: {value!r} is not a date (YYYY-MM-DD)"
                ) from None
        return days


class BarsConfig(ReplaceConfig):
    adjustment: str = Field(
        default="raw", description="raw (default), split, dividend or all (Alpaca adjustments)"
    )


class SnapshotConfig(ReplaceConfig):
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


@contextlib.contextmanager
def store_replacement(
    context: dg.AssetExecutionContext, store: HistoricalStore, target: Slice, config: ReplaceConfig
) -> Iterator[Replacement]:
    """The store's replacement, with its refusals and failures as a Dagster failure that
    carries the store's metadata (what ClickHouse and the lake hold now)."""
    try:
        with store.replacement(
            target,
            holder=context.run.run_id,
            log=context.log,
            allow_empty_days=config.empty_days(),
            allow_missing_symbols=config.allow_missing_symbols,
        ) as replacement:
            yield replacement
    except StoreError as exc:
        raise dg.Failure(str(exc), metadata=exc.metadata) from exc


def _replace(
    context: dg.AssetExecutionContext,
    store: HistoricalStore,
    target: Slice,
    config: ReplaceConfig,
    data: pa.Table,
) -> Publication:
    with store_replacement(context, store, target, config) as replacement:
        replacement.add(data)
    return replacement.publication


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


def session_metadata(
    bars: pa.Table, sess: TradingSession, symbol: str | None, volume_unit: str = "shares"
) -> dict[str, dg.MetadataValue]:
    """One session's own counts, time range and preview, and the chart of ``symbol`` (the
    most traded one when None) with the regular session shaded."""
    meta = frame_summary(bars)
    chart = session_chart(bars, sess, symbol, volume_unit)
    if chart is not None:
        meta["chart"] = chart
    return meta


def session_chart(
    bars: pa.Table, sess: TradingSession, symbol: str | None, volume_unit: str = "shares"
) -> dg.MetadataValue | None:
    """The day chart of ``symbol`` (the most traded one when None) from one session's minute
    bars, the regular session shaded; None without rows."""
    if not bars.num_rows:
        return None
    if symbol is None:
        volume = (
            bars.group_by("symbol")
            .aggregate([("volume", "sum")])
            .sort_by([("volume_sum", "descending")])
        )
        symbol = volume.column("symbol")[0].as_py()
    one = bars.filter(pc.equal(bars.column("symbol"), symbol)).sort_by("ts")
    if not one.num_rows:
        return None
    return price_chart(one, symbol, sess.day, (sess.open, sess.close), volume_unit=volume_unit)


def _by_session(bars: pa.Table, sessions: list[TradingSession]) -> dict[date, pa.Table]:
    """Rows per session of ``sessions`` (an empty frame for a session without rows)."""
    days = split_by_day(bars)
    return {s.day: days.get(s.day, bars.slice(0, 0)) for s in sessions}


@dataclass(frozen=True)
class _Piece:
    bars: pa.Table
    found: dict[date, BarFindings]


def _pieces(sessions: list[TradingSession], symbols: list[str]) -> list[list[TradingSession]]:
    minutes = max((s.post_close - s.pre_open) // timedelta(minutes=1) for s in sessions)
    per = max(1, PIECE_BARS // (len(symbols) * minutes))
    return [sessions[i : i + per] for i in range(0, len(sessions), per)]


def _judge_piece(
    stage: Replacement,
    bars: pa.Table,
    sessions: list[TradingSession],
    symbols: list[str],
    what: str,
) -> _Piece:
    """Validate one piece session by session and stage it in ClickHouse; its findings become
    the sessions' check results if ClickHouse shows that the slice holds exactly it."""
    days = split_by_day(bars)
    stray = [d for d in days if d not in {s.day for s in sessions}]
    if stray:
        stray_rows = pa.concat_tables([days[d] for d in stray])
        _refuse(bar_findings(stray_rows, sessions, None).outside, what)
    found = {s.day: bar_findings(days.get(s.day, bars.slice(0, 0)), [s], symbols) for s in sessions}
    joined = sum(found.values(), BarFindings([], [], [], []))
    _refuse(joined.ohlc, what)
    _refuse(joined.duplicates, what)
    _refuse(joined.outside, what)
    stage.add(bars)
    return _Piece(bars, found)


def _fetch_and_judge(
    market_data: MarketDataResource,
    symbols: list[str],
    sessions: list[TradingSession],
    adjustment: str,
    what: str,
    stage: Replacement,
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
    check_specs=check_specs("stock_bars_1m", BAR_CHECKS, trading_day_partitions),
    kinds={"clickhouse", "parquet"},
    description="1-minute equity bars, regular and extended hours, one NYSE session per "
    "partition, for the whole universe (ClickHouse bars_1m + lake bars_1m/).",
)
def stock_bars_1m(
    context: dg.AssetExecutionContext,
    config: BarsConfig,
    market_data: MarketDataResource,
    store: HistoricalStore,
):
    sessions = _sessions(context, datetime.now(UTC))
    symbols = equity_symbols()
    source = market_data.source
    days = [s.day for s in sessions]
    what = f"{source} bars of {days[0]}..{days[-1]}"
    # One slice replacement (one mutation) for the run's whole range; the store encodes the
    # lake files while ClickHouse moves the staged pieces into bars_1m.
    target = Slice(
        table="bars_1m",
        dataset="bars_1m",
        source=source,
        days=tuple(days),
        where=BAR_SLICE,
        params={"src": source, "days": days},
        asked=tuple(symbols),
    )
    with store_replacement(context, store, target, config) as replacement:
        pieces = _fetch_and_judge(
            market_data, symbols, sessions, config.adjustment, what, replacement
        )
    published = replacement.publication
    bars = pa.concat_tables([p.bars for p in pieces])
    checked = _as_stored(store.warehouse, "bars_1m", source, days, bars)
    found = {day: f for p in pieces for day, f in p.found.items()} if checked is bars else {}
    stored = _by_session(checked, sessions)
    results = {}
    for sess in sessions:
        key = sess.day.isoformat()
        context.add_asset_metadata(
            session_metadata(stored[sess.day], sess, symbols[0]), partition_key=key
        )
        results[key] = bar_check_results(stored[sess.day], [sess], symbols, found.get(sess.day))
    context.log.info(
        f"{what}: {bars.num_rows} bars of {len(symbols)} symbols -> ClickHouse bars_1m, "
        f"lake ({published.files} files)"
    )
    yield dg.MaterializeResult(metadata=_run_metadata(source, days, published))
    yield from partition_check_events(context, results)


def _run_metadata(source: str, days: list[date], published: Publication) -> dict:
    """What every partition of the run shares: the source, the run's sessions and the store's
    version; the lake file count is the run's (one file per session)."""
    return {
        "source": source,
        "run_sessions": f"{days[0]}..{days[-1]} ({len(days)})",
        **published.metadata(),
    }


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
    check_specs=check_specs(
        "stock_bars_1d", [("agrees_with_1m", True), ("ohlc_valid", True)], trading_day_partitions
    ),
    kinds={"clickhouse", "parquet"},
    description="Daily bars of the regular session, derived from stock_bars_1m in ClickHouse.",
)
def stock_bars_1d(
    context: dg.AssetExecutionContext,
    config: ReplaceConfig,
    market_data: MarketDataResource,
    store: HistoricalStore,
):
    warehouse = store.warehouse
    source = market_data.source
    days = [date.fromisoformat(k) for k in context.partition_keys]
    allowed = set(config.empty_days())
    frames = []
    for day in days:
        daily = warehouse.query_arrow(DAILY_SQL, {"src": source, "d": day})
        if daily.num_rows == 0 and day not in allowed:
            raise dg.Failure(f"no regular-session {source} bars for {day}: run stock_bars_1m")
        frames.append(daily.drop_columns([c for c in ("version",) if c in daily.column_names]))
    target = Slice(
        table="bars_1d",
        dataset="bars_1d",
        source=source,
        days=tuple(days),
        where="source = {src:String} AND session_date IN {days:Array(Date)}",
        params={"src": source, "days": days},
    )
    published = _replace(context, store, target, config, pa.concat_tables(frames))
    stored = _by_session(_stored(warehouse, "bars_1d", source, days), [session(d) for d in days])
    # The day's minute bars the daily bars come from: each partition's chart (like 1m's).
    minutes = _by_session(_stored(warehouse, "bars_1m", source, days), [session(d) for d in days])
    cols = ["symbol", "open", "high", "low", "close", "volume", "trade_count"]
    results = {}
    for day in days:
        daily = stored[day]
        again = warehouse.query_arrow(DAILY_SQL, {"src": source, "d": day})
        agree = daily.select(cols).sort_by("symbol").equals(again.select(cols).sort_by("symbol"))
        findings = ohlc_findings(daily)
        meta = frame_summary(daily)
        chart = session_chart(minutes[day], session(day), equity_symbols()[0])
        if chart is not None:
            meta["chart"] = chart
        context.add_asset_metadata(meta, partition_key=day.isoformat())
        results[day.isoformat()] = [
            dg.AssetCheckResult(
                check_name="agrees_with_1m",
                passed=agree,
                metadata={"daily_rows": daily.num_rows, "recomputed_rows": again.num_rows},
            ),
            dg.AssetCheckResult(
                check_name="ohlc_valid",
                passed=not findings,
                metadata={"findings": findings_table(findings), "count": len(findings)},
            ),
        ]
    yield dg.MaterializeResult(metadata=_run_metadata(source, days, published))
    yield from partition_check_events(context, results)


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
    check_specs=check_specs("option_chain_snapshots", QUOTE_CHECKS, trading_day_partitions),
    kinds={"clickhouse", "parquet"},
    description="Intraday snapshots of the option chain (quotes, IV, Greeks) of the configured "
    "underlyings; each materialisation appends one snapshot time to the day.",
)
def option_chain_snapshots(
    context: dg.AssetExecutionContext,
    config: SnapshotConfig,
    market_data: MarketDataResource,
    store: HistoricalStore,
) -> dg.MaterializeResult:
    warehouse = store.warehouse
    now = datetime.now(UTC)
    sess = session(date.fromisoformat(context.partition_key))
    at = _snapshot_time(config, sess, now, live=market_data.source == "alpaca")
    underlyings = option_underlyings()
    frames = [market_data.option_chain_snapshot(u, at) for u in underlyings]
    chain = pa.concat_tables(frames)
    _refuse(quote_rule_findings(chain), f"option chain at {at.isoformat()}")
    _refuse(
        duplicate_findings(chain, ("symbol", "snapshot_ts")), f"option chain at {at.isoformat()}"
    )
    source = market_data.source
    target = Slice(
        table="options_quotes",
        dataset="options_quotes",
        source=source,
        days=(sess.day,),
        where=SNAPSHOT_SLICE,
        params={"src": source, "d": sess.day, "at": at},
        asked=tuple(underlyings),
        part=f"snapshot-{at:%H%M}.parquet",
        exclusive=False,  # the day's folder holds one file per snapshot time
        order_by=("symbol", "snapshot_ts"),
    )
    published = _replace(context, store, target, config, chain)
    stored = _stored(warehouse, "options_quotes", source, [sess.day])
    snapshots = pc.unique(stored.column("snapshot_ts")).to_pylist()
    context.log.info(f"{sess.day} {at:%H:%M}Z: {chain.num_rows} quotes; {len(snapshots)} snapshots")
    smiles = {
        f"iv_smile {u} {e}": smile_chart(chain, u, e)
        for u in underlyings
        for e in sorted(
            pc.unique(
                chain.filter(pc.equal(chain.column("underlying"), u)).column("expiry")
            ).to_pylist()
        )[:SMILES_PER_UNDERLYING]
    }
    return dg.MaterializeResult(
        metadata={
            **chain_summary(chain),
            **smiles,
            "snapshot_ts": at.isoformat(),
            "snapshots_today": len(snapshots),
            "source": source,
            **published.metadata(),
        },
        check_results=quote_check_results(stored),
    )


@dg.asset(
    group_name="historical",
    partitions_def=trading_day_partitions,
    backfill_policy=BACKFILL,
    deps=[option_chain_snapshots, *SCHEMA_DEPS],
    check_specs=check_specs("option_bars_1m", BAR_CHECKS[:-1], trading_day_partitions),
    kinds={"clickhouse", "parquet"},
    description="1-minute bars of the option contracts seen in that day's chain snapshots.",
)
def option_bars_1m(
    context: dg.AssetExecutionContext,
    config: ReplaceConfig,
    market_data: MarketDataResource,
    store: HistoricalStore,
):
    warehouse = store.warehouse
    sessions = _sessions(context, datetime.now(UTC))
    source = market_data.source
    published: list[Publication] = []
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
        target = Slice(
            table="option_bars_1m",
            dataset="option_bars_1m",
            source=source,
            days=(sess.day,),
            where=BAR_SLICE,
            params={"src": source, "days": [sess.day]},
            asked=tuple(contracts),
        )
        published.append(_replace(context, store, target, config, bars))
        context.log.info(f"{sess.day}: {bars.num_rows} option bars of {len(contracts)} contracts")
    stored = _by_session(
        _stored(warehouse, "option_bars_1m", source, [s.day for s in sessions]), sessions
    )
    results = {}
    for sess in sessions:
        key = sess.day.isoformat()
        meta = session_metadata(stored[sess.day], sess, None, volume_unit="contracts")
        context.add_asset_metadata(meta, partition_key=key)
        results[key] = bar_check_results(stored[sess.day], [sess], symbols=None)
    repaired = [note for p in published for note in p.repaired]
    overrides = [note for p in published for note in p.overrides]
    extra = {"repaired": dg.MetadataValue.json(repaired)} if repaired else {}
    if overrides:
        extra["overrides"] = dg.MetadataValue.json(overrides)
    yield dg.MaterializeResult(metadata={"source": source, **extra})
    yield from partition_check_events(context, results)


historical_assets = [stock_bars_1m, stock_bars_1d, option_chain_snapshots, option_bars_1m]
