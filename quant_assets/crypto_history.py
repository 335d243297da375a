"""Crypto history (group ``crypto_history``): Binance's public archive as UTC-day partitions.

Partitions are UTC days from ``QUANT_CRYPTO_HISTORY_START`` to yesterday (the archive publishes
a day after it ends); the universe is ``QUANT_CRYPTO_SYMBOLS``. A run asks the archive for its
range per symbol (``ArchiveClient.history``: month files for complete past months, day files
otherwise), each file checksum-verified before it is parsed. Everything is staged first and
published through ``HistoricalStore`` only once every file of the run was read and checked: a
checksum mismatch, a corrupt or cut zip, a bad row (wrong column count, time outside the file's
day, non-positive price) fails the run naming file, line and value, and nothing is written.

* ``binance_klines_1m``: the exchange's own 1m bars (ClickHouse ``binance_klines_1m``, lake).
* ``crypto_trades`` + ``crypto_bars_1m`` (one step): archive aggTrades into the ``trades``
  table the live job writes (``source='binance_archive'``) and the lake, and their 1m bars
  (``quant_core.bars_batch``, the live aggregator's semantics) into ``bars_1m``. Checks:
  ``crypto_bars_1m.matches_binance_klines`` (every column of every minute) and
  ``crypto_trades.matches_live_trades`` (for days a live session stored trades).
* ``crypto_coverage_1m``: ClickHouse ``coverage_1m``, trades per source path and minute, with
  a chart of each day's coverage.
"""

import base64
from collections.abc import Iterator
from datetime import UTC, date, datetime

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quant_assets.chart import COVERAGE_STATES, coverage_png
from quant_assets.historical import BAR_SLICE, SCHEMA_DEPS, ReplaceConfig, store_replacement
from quant_assets.metadata import frame_summary, price_chart
from quant_assets.quality_checks import TABLE_ROWS, check_table, partition_check_events
from quant_core.bars_batch import aggregate_batch
from quant_core.crypto_reconcile import (
    ARCHIVE_SOURCE,
    DAY_MS,
    LIVE_SOURCE,
    Differences,
    archive_trade_rows,
    id_runs_text,
    kline_differences,
    kline_rows,
    trade_differences,
)
from quant_core.formats.binance_archive import ArchiveFormatError, schema
from quant_resources.binance_archive import ArchiveClient, ArchiveError, BinanceArchiveResource
from quant_resources.crypto_warehouse import coverage_rows, live_trades, stored_klines
from quant_resources.settings import crypto_history_start, crypto_symbols
from quant_resources.store import HistoricalStore, Replacement, Slice

GROUP = "crypto_history"
crypto_day_partitions = dg.DailyPartitionsDefinition(
    start_date=crypto_history_start(), timezone="UTC", end_offset=0
)
# A run holds its days in memory until it publishes (a real BTCUSDT day is ~2M aggTrades,
# ~200 MB as Arrow): a week per run. A longer single run (quant backfill --per-run 31 over a
# calendar month) reads month files instead of 31 day files.
BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=7)
DAY_SLICE = "source = {src:String} AND session_date IN {days:Array(Date)}"
MINUTES = 1440


def _days(context: dg.AssetExecutionContext) -> list[date]:
    days = sorted(date.fromisoformat(k) for k in context.partition_keys)
    today = datetime.now(UTC).date()
    if days[-1] >= today:
        raise dg.Failure(f"partition {days[-1]} has not ended yet (UTC); the archive has it later")
    return days


def _slice(table: str, source: str, days: list[date], symbols: list[str], **kw) -> Slice:
    return Slice(
        table=table,
        dataset=table,
        source=source,
        days=tuple(days),
        where=kw.pop("where", DAY_SLICE),
        params={"src": source, "days": days},
        asked=tuple(symbols),
        **kw,
    )


def archive_targets(days: list[date], symbols: list[str]) -> tuple[Slice, Slice]:
    """The trades and bars slices ``crypto_archive_trades`` replaces (the bench's stage
    breakdown replaces the same)."""
    trades = _slice("trades", ARCHIVE_SOURCE, days, symbols, order_by=("symbol", "ts"), bulk=True)
    return trades, _slice("bars_1m", ARCHIVE_SOURCE, days, symbols, where=BAR_SLICE)


def archive_bars(agg: pa.Table) -> pa.Table:
    """The ``bars_1m`` rows of one parsed aggTrades table."""
    bars = aggregate_batch(agg)
    return bars.set_column(0, "source", pa.array([ARCHIVE_SOURCE] * bars.num_rows, pa.string()))


def archive_files(
    client: ArchiveClient, kind: str, symbol: str, days: list[date], config: ReplaceConfig
) -> Iterator[tuple[str, pa.Table]]:
    """(file name, its rows of ``days``) per archive file of the run's range. A file the
    archive does not have fails the run unless its days or symbol are allowed empty; a bad
    file fails it naming file, line and value."""
    wanted = set(days)
    allowed_days = set(config.empty_days())
    allowed_symbols = {s.upper() for s in config.allow_missing_symbols}
    try:
        for fetched in client.history(kind, symbol, days[0], days[-1]):
            name = fetched.file
            inside = [d for d in fetched.period.days() if d in wanted]
            if not inside:
                continue
            if fetched.table is None:
                if symbol in allowed_symbols or all(d in allowed_days for d in inside):
                    continue
                raise dg.Failure(
                    f"{name}: not in the archive (HTTP 404): not published yet, or {symbol} "
                    f"did not trade on {inside[0]}; nothing written. If the day is really "
                    f"empty, allow it with allow_empty_days: ['{inside[0]}'] (or "
                    f"allow_missing_symbols: ['{symbol}'])"
                )
            table = fetched.table
            if len(inside) < len(fetched.period.days()):
                time = "open_time" if kind == "klines" else "ts_event"
                day = pc.cast(pc.cast(table[time], pa.date32()), pa.date32())
                table = table.filter(pc.is_in(day, pa.array(sorted(wanted), pa.date32())))
            yield name, table
    except (ArchiveError, ArchiveFormatError) as exc:
        raise dg.Failure(f"{exc}; nothing written") from exc


def _by_day(table: pa.Table, column: str = "session_date") -> dict[str, int]:
    if not table.num_rows:
        return {}
    counts = pc.value_counts(table[column])  # a few distinct days: named after counting
    return dict(sorted((c["values"].as_py().isoformat(), c["counts"].as_py()) for c in counts))


def _concat(stage: Replacement, empty: pa.Table) -> pa.Table:
    """What the run staged, or ``empty`` (the right columns) when every day was allowed empty."""
    return pa.concat_tables(stage.pieces) if stage.pieces else empty


def _chart(table: pa.Table, symbol: str, day: date) -> dict[str, dg.MetadataValue]:
    mask = pc.and_(
        pc.equal(table["symbol"], symbol),
        pc.equal(table["session_date"], pa.scalar(day, pa.date32())),
    )
    one = table.filter(mask).sort_by("ts") if table.num_rows else table
    if not one.num_rows:
        return {}
    # Crypto trades around the clock: no session to mark; prices in the quote asset.
    return {"chart": price_chart(one, symbol, day, None, symbol[-4:], symbol[:-4])}


@dg.asset(
    group_name=GROUP,
    partitions_def=crypto_day_partitions,
    backfill_policy=BACKFILL,
    deps=SCHEMA_DEPS,
    kinds={"clickhouse", "parquet"},
    description="Binance's own 1-minute spot klines from its public archive, one UTC day per "
    "partition (ClickHouse binance_klines_1m + lake binance_klines_1m/).",
)
def binance_klines_1m(
    context: dg.AssetExecutionContext,
    config: ReplaceConfig,
    store: HistoricalStore,
    binance_archive: BinanceArchiveResource,
) -> dg.MaterializeResult:
    days, symbols = _days(context), crypto_symbols()
    target = _slice("binance_klines_1m", ARCHIVE_SOURCE, days, symbols)
    files = []
    with store_replacement(context, store, target, config) as stage, binance_archive.client() as c:
        for symbol in symbols:
            for name, table in archive_files(c, "klines", symbol, days, config):
                stage.add(kline_rows(table))
                if name not in files:  # a month file gives several days
                    files.append(name)
    klines = _concat(stage, kline_rows(schema("klines").empty_table()))
    meta = {
        **frame_summary(klines),
        "files": dg.MetadataValue.json(files),
        "rows_per_day": dg.MetadataValue.json(_by_day(klines)),
        **stage.publication.metadata(),
        **_chart(klines, symbols[0], days[-1]),
    }
    return dg.MaterializeResult(metadata=meta)


KLINE_CHECK = "matches_binance_klines"
LIVE_CHECK = "matches_live_trades"


@dg.multi_asset(
    name="crypto_archive_trades",
    specs=[
        dg.AssetSpec(
            "crypto_trades",
            group_name=GROUP,
            deps=SCHEMA_DEPS,
            kinds={"clickhouse", "parquet"},
            description="Binance spot aggregate trades from its public archive, one UTC day "
            "per partition (ClickHouse trades with source='binance_archive', the table the "
            "live job writes; lake trades/). Exact times: ts (ms) + ts_sub_us.",
        ),
        dg.AssetSpec(
            "crypto_bars_1m",
            group_name=GROUP,
            deps=["crypto_trades", "binance_klines_1m"],
            kinds={"clickhouse", "parquet"},
            description="1-minute bars of the archive trades, same semantics and columns as "
            "the live bars (ClickHouse bars_1m with source='binance_archive'; lake bars_1m/).",
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            KLINE_CHECK,
            asset="crypto_bars_1m",
            additional_deps=["binance_klines_1m"],
            description="Every minute's bar equals Binance's kline on every column (open, "
            "high, low, close, volume, quote volume, trades, taker-buy volumes, close time); "
            "differing minutes are listed with both rows.",
            partitions_def=crypto_day_partitions,  # ui2: one result per day
        ),
        dg.AssetCheckSpec(
            LIVE_CHECK,
            asset="crypto_trades",
            description="For every day a live session stored trades: live and archive trades "
            "identical by id, price, qty, time and side, within the ids live saw; missing "
            "and extra ids named, differing trades listed.",
            partitions_def=crypto_day_partitions,  # ui2: one result per day
        ),
    ],
    partitions_def=crypto_day_partitions,
    backfill_policy=BACKFILL,
    can_subset=False,
)
def crypto_archive_trades(
    context: dg.AssetExecutionContext,
    config: ReplaceConfig,
    store: HistoricalStore,
    binance_archive: BinanceArchiveResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    days, symbols = _days(context), crypto_symbols()
    trade_target, bar_target = archive_targets(days, symbols)
    files = []
    # Trades publish first (the inner block ends first), then their bars.
    with (
        store_replacement(context, store, bar_target, config) as bar_stage,
        store_replacement(context, store, trade_target, config) as trade_stage,
        binance_archive.client() as client,
    ):
        for symbol in symbols:
            for name, agg in archive_files(client, "aggTrades", symbol, days, config):
                trade_stage.add(archive_trade_rows(agg, name))
                bar_stage.add(archive_bars(agg))
                if name not in files:  # a month file gives several days
                    files.append(name)
        downloaded = list(client.downloaded)  # month files already cached are not
    empty = schema("aggTrades").empty_table()
    trades = _concat(trade_stage, archive_trade_rows(empty, ""))
    bars = _concat(bar_stage, aggregate_batch(empty))
    yield dg.MaterializeResult(
        asset_key="crypto_trades",
        metadata={
            **frame_summary(trades),
            "files": dg.MetadataValue.json(files),
            "downloaded": dg.MetadataValue.json(downloaded),
            "rows_per_day": dg.MetadataValue.json(_by_day(trades)),
            **trade_stage.publication.metadata(),
        },
    )
    yield dg.MaterializeResult(
        asset_key="crypto_bars_1m",
        metadata={
            **frame_summary(bars),
            "bars_per_day": dg.MetadataValue.json(_by_day(bars)),
            **bar_stage.publication.metadata(),
            **_chart(bars, symbols[0], days[-1]),
        },
    )
    yield from crypto_check_events(context, store, symbols, days, bars, trades)  # ui2: per day


def crypto_check_events(
    context: dg.AssetExecutionContext,
    store: HistoricalStore,
    symbols: list[str],
    days: list[date],
    bars: pa.Table,
    trades: pa.Table,
) -> Iterator[dg.Output | dg.AssetCheckEvaluation]:
    """Both checks judged day by day, each result an evaluation of its own partition (a run's
    days judged together would read "Partition —" in the UI)."""
    results = {}
    for day in days:
        key = day.isoformat()
        results[key] = [
            _kline_check(store, symbols, [day], _of_day(bars, day)),
            _live_check(store, symbols, [day], _of_day(trades, day)),
        ]
    yield from partition_check_events(context, results)


def _of_day(table: pa.Table, day: date) -> pa.Table:
    return table.filter(pc.equal(table["session_date"], pa.scalar(day, pa.date32())))


def _table(found: Differences) -> dg.MetadataValue:
    # A table, drawn in place on the check's page (markdown would hide behind a link).
    if not found.count:
        return dg.MetadataValue.text("no differences")
    return check_table(found.records(TABLE_ROWS), total=found.count)


def _kline_check(
    store: HistoricalStore, symbols: list[str], days: list[date], bars: pa.Table
) -> dg.AssetCheckResult:
    klines = stored_klines(store.warehouse, symbols, days)
    found = kline_differences(bars, klines)
    have = set(zip(*(klines[c].to_pylist() for c in ("symbol", "session_date")), strict=True))
    lacking = sorted(
        f"{s} {d}"
        for s, d in set(
            zip(*(bars[c].to_pylist() for c in ("symbol", "session_date")), strict=True)
        )
        - have
    )
    meta: dict[str, object] = {
        "minutes_compared": found.compared,
        "differing_minutes": found.count,
        "differences": _table(found),
    }
    if lacking:
        meta["days_without_klines"] = dg.MetadataValue.json(
            {"days": lacking, "hint": "materialize binance_klines_1m for them first"}
        )
    return dg.AssetCheckResult(
        asset_key="crypto_bars_1m", check_name=KLINE_CHECK, passed=found.count == 0, metadata=meta
    )


def _live_check(
    store: HistoricalStore, symbols: list[str], days: list[date], trades: pa.Table
) -> dg.AssetCheckResult:
    live = live_trades(store.warehouse, symbols, days)
    if not live.num_rows:
        return dg.AssetCheckResult(
            asset_key="crypto_trades",
            check_name=LIVE_CHECK,
            passed=True,
            metadata={"live_days": 0, "note": "no live session stored trades on these days"},
        )
    found = trade_differences(live, trades)
    live_days = sorted({d.isoformat() for d in pc.cast(live["ts"], pa.date32()).to_pylist()})
    meta = {
        "live_days": dg.MetadataValue.json(live_days),
        "live_trades": live.num_rows,
        "archive_trades_in_live_span": found.compared,
        "differences": found.count,
        "missing_from_live": sum(len(v) for v in found.missing.values()),
        "extra_in_live": sum(len(v) for v in found.extra.values()),
        "table": _table(found),
    }
    if found.missing:
        meta["missing_ids"] = id_runs_text(found.missing)
    if found.extra:
        meta["extra_ids"] = id_runs_text(found.extra)
    return dg.AssetCheckResult(
        asset_key="crypto_trades", check_name=LIVE_CHECK, passed=found.count == 0, metadata=meta
    )


@dg.asset(
    group_name=GROUP,
    partitions_def=crypto_day_partitions,
    backfill_policy=BACKFILL,
    deps=["crypto_trades"],
    kinds={"clickhouse"},
    description="Per symbol and minute, how many aggregate trades the live stream, REST gap "
    "repair and the archive stored (ClickHouse coverage_1m), with a chart of each day's "
    "coverage: where live missed trades, the strip is red.",
)
def crypto_coverage_1m(
    context: dg.AssetExecutionContext, config: ReplaceConfig, store: HistoricalStore
) -> dg.MaterializeResult:
    days, symbols = _days(context), crypto_symbols()
    rows = coverage_rows(store.warehouse, symbols, days)
    target = _slice("coverage_1m", LIVE_SOURCE, days, symbols)
    with store_replacement(context, store, target, config) as stage:
        stage.add(rows)
    summary, states = coverage_summary(rows)
    legend = ", ".join(f"{name}" for name in COVERAGE_STATES[1:])
    encoded = base64.b64encode(coverage_png(states)).decode() if len(states) else ""
    chart = (
        f"![coverage](data:image/png;base64,{encoded})\n\none strip per row below, "
        f"00:00-24:00 UTC; grey/green/red/orange: {legend}"
        if encoded
        else "no trades"
    )
    table = [
        "| symbol | day | archive | live stream | live REST | live missed | live minutes "
        "| missed minutes |"
    ]
    table.append("|---|---|---|---|---|---|---|---|")
    table += [" | ".join(["", *map(str, row), ""]).strip() for row in summary]
    return dg.MaterializeResult(
        metadata={
            "rows": rows.num_rows,
            "coverage": dg.MetadataValue.md(chart + "\n\n" + "\n".join(table)),
            "live_missed_trades": sum(r[5] for r in summary),
            "live_rest_trades": sum(r[4] for r in summary),
            **stage.publication.metadata(),
        }
    )


def coverage_summary(rows: pa.Table) -> tuple[list[tuple], np.ndarray]:
    """Per (symbol, day): (symbol, day, archive trades, live stream trades, live REST trades,
    trades live missed, minutes live ran, minutes it missed trades in), and the per-minute
    states of the chart (``COVERAGE_STATES``). Live "ran" from its first to its last minute of
    the day; what it stored counts both its stream and its REST repairs."""
    summary: list[tuple] = []
    strips: list[np.ndarray] = []
    if not rows.num_rows:
        return summary, np.zeros((0, MINUTES), np.uint8)
    minute = (pc.cast(rows["ts"], pa.int64()).to_numpy() % DAY_MS) // 60_000
    day_ms = pc.cast(rows["ts"], pa.int64()).to_numpy() // DAY_MS
    symbol = np.asarray(rows["symbol"].to_pylist(), dtype=object)
    stream = rows["live"].to_numpy().astype(np.int64)
    rest = rows["rest"].to_numpy().astype(np.int64)
    live = stream + rest
    archive = rows["archive"].to_numpy().astype(np.int64)
    for sym, day in sorted(set(zip(symbol.tolist(), day_ms.tolist(), strict=True))):
        mask = (symbol == sym) & (day_ms == day)
        m, lv, ar = minute[mask], live[mask], archive[mask]
        state = np.zeros(MINUTES, np.uint8)
        state[m[ar > 0]] = 1
        ran = np.flatnonzero(lv > 0)
        missed_minutes = 0
        missed = 0
        if ran.size:
            inside = (m >= m[ran[0]]) & (m <= m[ran[-1]])
            state[m[inside & (lv == ar)]] = 2
            state[m[inside & (lv < ar)]] = 3
            state[m[inside & (lv > ar)]] = 4
            missed_minutes = int((inside & (lv < ar)).sum())
            missed = int(np.maximum(ar - lv, 0)[inside].sum())
            span = int(m[ran[-1]] - m[ran[0]] + 1)
        else:
            span = 0
        strips.append(state)
        d = date.fromordinal(date(1970, 1, 1).toordinal() + int(day))
        streamed, repaired = int(stream[mask].sum()), int(rest[mask].sum())
        summary.append((sym, d, int(ar.sum()), streamed, repaired, missed, span, missed_minutes))
    return summary, np.stack(strips)


crypto_history_assets = [binance_klines_1m, crypto_archive_trades, crypto_coverage_1m]
crypto_history_job = dg.define_asset_job(
    "crypto_history_job",
    selection=dg.AssetSelection.groups(GROUP),
    description="Binance spot history from its public archive: klines, trades, bars, "
    "reconciliation with live, coverage.",
)
