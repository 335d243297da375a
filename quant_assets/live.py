"""Live ingestion in Dagster (group ``live``): one long-running run of ``live_ingest_job``.

The run streams Binance into ClickHouse until it is stopped (or its optional duration ends).
``live_trades`` and ``live_bars_1m`` are materialised by it: once per minute of exchange time
(trades and quotes per minute, lag p50/p99, connections, gaps open and repaired, the last final
bar; Dagster plots these on the asset pages) and once more at the stop, with the session's
totals. ``live_ingest_supervisor`` (sensors/live.py) is their automation.

Stopping the run from the UI (Terminate) stops it cleanly: every ended minute is flushed and
the session log is closed and uploaded; the run then ends as canceled, with one line saying so,
and the supervisor leaves it stopped until someone launches the job again. A stop by a signal
nobody asked for in the UI (the code server going away) ends as a failure, which the
supervisor restarts. A run that a terminal ``quant live`` executes (config ``terminal``) has no
run worker to signal: it reads its own status once a second and stops the same way when
Terminate marks it canceling (``quant_assets/live_runs.py``).
"""

import asyncio
import signal
import sys
import time

import dagster as dg
import orjson
from pydantic import Field

from quant_assets.books import BookReport  # books hook
from quant_resources.binance.urls import parse_streams, parse_symbols, rest_base, ws_base
from quant_resources.lake import LakeResource
from quant_resources.live.bar_audit import bar_differences, minute_range, session_ranges
from quant_resources.live.minute_report import MinuteReport
from quant_resources.live.outage import OutageWatch
from quant_resources.live.pipeline import LiveConfig, LivePipeline
from quant_resources.live.status_line import StatusLine
from quant_resources.settings import live_symbols, nats_url, quant_home, redis_url
from quant_resources.warehouse import WarehouseResource

LIVE_TAG = "quant/live-ingest"
# Runs stopped on a request from the UI, and the line their cancel shows (set by the op, read
# by ``end_as_canceled``; the in-process executor runs both in the run's process).
STOPPED_ON_REQUEST: dict[str, str] = {}
# What a run reads as "a user asked to stop" (Terminate marks it CANCELING first).
CANCEL_REQUESTED = (dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED)
# The session summary of a run started by ``quant live`` (config ``terminal``), handed back to
# the command in the same process, which prints it (one entry per run, popped by the command).
TERMINAL_SUMMARIES: dict[str, object] = {}
SUPERVISION = (
    "Kept running by the live_ingest_supervisor sensor, which restarts a crashed or lost run "
    "but not one stopped from the UI (Terminate): that stays stopped until the job is launched "
    "again (Materialize here, or Launchpad)."
)

live_trades = dg.AssetSpec(
    "live_trades",
    group_name="live",
    kinds={"clickhouse"},
    description=(
        "Binance trades written by the live ingestion run (ClickHouse `trades`), reported each "
        "minute of exchange time: trades and quotes per minute, lag p50/p99, connections, "
        f"gaps. {SUPERVISION}"
    ),
    deps=["clickhouse_schema"],
)
live_bars_1m = dg.AssetSpec(
    "live_bars_1m",
    group_name="live",
    kinds={"clickhouse"},
    description=(
        "1-minute Binance bars from the live aggregator (ClickHouse `bars_1m`), reported each "
        f"minute of exchange time with the last final bar. {SUPERVISION}"
    ),
    deps=["live_trades"],
)


class LiveIngestConfig(dg.Config):
    symbols: str = Field(default_factory=lambda: live_symbols())
    streams: str = "aggTrade,bookTicker"
    duration_s: float | None = Field(default=None, description="None: until stopped.")
    lateness_ms: int = 2000
    status_line: bool = Field(
        default=False, description="Print a status line on stderr (the demo's terminal)."
    )
    book_depth: int = Field(default=20, description="Levels a side in each book snapshot.")
    book_interval_ms: int = Field(
        default=1000, description="Exchange milliseconds between book snapshots."
    )
    max_outage_s: float | None = Field(
        default=None,
        description="Stop (fail) after this many seconds without a warehouse write; None: retry.",
    )
    terminal: bool = Field(
        default=False,
        description=(
            "Started by `quant live` in a terminal: SIGINT/SIGTERM is the user's stop (the run "
            "succeeds) and the summary goes back to the command."
        ),
    )


def minute_metadata(numbers: dict) -> dict:
    """Dagster metadata of one minute: numbers stay numbers (plotted), times are timestamps."""
    metadata: dict = {}
    for name, value in numbers.items():
        if name in ("exchange_minute_ms", "last_final_bar_ms"):
            if value is not None:
                metadata[name.removesuffix("_ms")] = dg.MetadataValue.timestamp(value / 1000)
        else:
            metadata[name] = value
    return metadata


TRADE_KEYS = ("trades", "quotes", "lag_p50_ms", "lag_p99_ms", "connections", "reconnects")
BAR_KEYS = ("last_final_bar", "gaps_open", "gaps_repaired", "rest_trades", "bar_versions_total")


def report_minute(numbers: dict, extra: dict | None = None) -> list[dg.MaterializeResult]:
    """``live_trades`` and ``live_bars_1m`` materialisations of one minute of exchange time."""
    metadata = {**minute_metadata(numbers), **(extra or {})}
    shared = {k: v for k, v in metadata.items() if k not in TRADE_KEYS + BAR_KEYS}
    return [
        dg.MaterializeResult(
            asset_key=key,
            metadata={**{k: metadata[k] for k in keys if k in metadata}, **shared},
        )
        for key, keys in (("live_trades", TRADE_KEYS), ("live_bars_1m", BAR_KEYS))
    ]


@dg.multi_asset(
    specs=[live_trades, live_bars_1m],
    name="live_ingest",
    op_tags={LIVE_TAG: "1"},
    description="Binance streams -> ClickHouse until stopped; reports every exchange minute.",
)
def live_ingest(
    context: dg.AssetExecutionContext,
    config: LiveIngestConfig,
    warehouse: WarehouseResource,
    lake: LakeResource,
):
    live_config = LiveConfig(
        symbols=parse_symbols(config.symbols),
        streams=parse_streams(config.streams),
        ws_url=ws_base(),
        rest_url=rest_base(),
        session_root=quant_home() / "sessions",
        duration_s=config.duration_s,
        lateness_ms=config.lateness_ms,
        nats_url=nats_url(),
        redis_url=redis_url(),
        book_depth=config.book_depth,
        book_interval_ms=config.book_interval_ms,
    )
    pipeline = LivePipeline(live_config, warehouse, lake)
    hour = {"value": int(time.time() // 3600)}
    report_books = BookReport()  # books hook: live_book_snapshots per closed hour
    minutes = MinuteReport()
    outage = OutageWatch(warehouse.display_url, config.max_outage_s)
    line = (
        StatusLine(config.duration_s, interactive=sys.stderr.isatty())
        if config.status_line
        else None
    )

    def on_status(summary, pipeline: LivePipeline) -> None:
        outage(summary, pipeline)
        ended = minutes.tick(summary, pipeline)
        if ended is not None:
            for result in report_minute(ended):
                context.log_event(
                    dg.AssetMaterialization(result.asset_key, metadata=result.metadata)
                )
        if line is not None:
            line(summary, pipeline)
        now_hour = int(time.time() // 3600)
        if now_hour != hour["value"]:
            hour["value"] = now_hour
            report_books(context, summary, "hour")  # books hook

    pipeline.status = on_status
    terminated: list[int] = []
    # A terminal run has no run worker the launcher could signal: Terminate in the UI only
    # marks it CANCELING, which this process reads (once a second, off the event loop).
    from_dagster: list[bool] = []

    def terminate(sig: int) -> None:
        terminated.append(sig)
        pipeline.request_stop()

    async def watch_run_status() -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1)
            run = await loop.run_in_executor(None, context.instance.get_run_by_id, context.run_id)
            if run is not None and run.status in CANCEL_REQUESTED:
                from_dagster.append(True)
                pipeline.request_stop()
                return

    async def main():
        loop = asyncio.get_running_loop()
        # Run termination arrives as SIGTERM/SIGINT: turn it into a clean stop.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, terminate, sig)
        watch = asyncio.create_task(watch_run_status()) if config.terminal else None
        try:
            return await pipeline.run()
        finally:
            if watch is not None:
                watch.cancel()

    try:
        summary = asyncio.run(main())
    except RuntimeError as exc:
        if not pipeline.sinks["warehouse"].pending:
            raise
        # The stop could not write what it had (the session log holds it): one line.
        raise dg.Failure(outage.gave_up or str(exc), allow_retries=False) from None
    finally:
        outage.close()
        if line is not None:
            line.end()
    if outage.gave_up:
        raise dg.Failure(outage.gave_up, allow_retries=False)
    report_books(context, summary, "stop")  # books hook
    stop = {
        "session_id": summary.session_id,
        "stopped": (
            "from Dagster" if from_dagster else "on request" if terminated else "duration ended"
        ),
        "final_digest": summary.final_digest,
        "frames": summary.frames,
        "outages": outage.outages,
    }
    results = report_minute(minutes.close(summary, pipeline), stop)
    text = (
        f"session {summary.session_id} closed cleanly: {summary.trades:,} trades, "
        f"{summary.bars:,} bar versions, {summary.gaps} gaps repaired with "
        f"{summary.trades_repaired:,} trades from REST"
    )
    if config.terminal:
        TERMINAL_SUMMARIES[context.run_id] = summary
        if from_dagster:
            STOPPED_ON_REQUEST[context.run_id] = (
                f"Stopped from Dagster (Terminate); {text}. The terminal's quant live exited."
            )
    elif terminated:
        run = context.instance.get_run_by_id(context.run_id)
        if run is None or run.status != dg.DagsterRunStatus.CANCELING:
            # Nobody asked in the UI: a failure, so the supervisor starts the next run.
            for result in results:
                context.log_event(
                    dg.AssetMaterialization(result.asset_key, metadata=result.metadata)
                )
            raise dg.Failure(
                f"stopped by {signal.Signals(terminated[0]).name} without a request from the "
                f"UI; {text}",
                allow_retries=False,
            )
        STOPPED_ON_REQUEST[context.run_id] = (
            f"Stopped on request; {text}. The supervisor leaves it stopped until "
            "live_ingest_job is launched again."
        )
    context.log.info(text)
    yield from results


@dg.success_hook
def end_as_canceled(context: dg.HookContext) -> None:
    """A run stopped from the UI stopped cleanly (its step succeeded); it ends as canceled, with
    one readable line and no stack trace. Raised outside the step, the interrupt ends the run
    without a step failure; the run is marked canceled first, so no error is attached."""
    message = STOPPED_ON_REQUEST.pop(context.run_id, None)
    if message is None:
        return
    run = context.instance.get_run_by_id(context.run_id)
    context.instance.report_run_canceled(run, message=message)
    raise dg.DagsterExecutionInterruptedError(message)


live_ingest_job = dg.define_asset_job(
    "live_ingest_job",
    selection=dg.AssetSelection.assets(live_ingest).without_checks(),
    tags={LIVE_TAG: "1"},
    executor_def=dg.in_process_executor,
    hooks={end_as_canceled},
    description="Binance streams -> ClickHouse, until stopped (one run at a time).",
)


AUDITED_SESSIONS = 20  # the most recent sessions the bar check looks at


@dg.asset_check(
    asset="live_bars_1m",
    description=(
        "Every minute that has ended (before a closed session's stop, or before a running "
        "session's watermark minus the lateness) has the bar of its stored trades, exactly."
    ),
)
def live_bars_equal_trades(warehouse: WarehouseResource, lake: LakeResource) -> dg.AssetCheckResult:
    manifests = []
    keys = sorted(k for k in lake.list("sessions/") if k.endswith("/session.json"))
    for key in keys[-AUDITED_SESSIONS:]:
        manifests.append(orjson.loads(lake.read_bytes(key)))
    ranges = session_ranges(warehouse, manifests)
    differing: list[dict] = []
    minutes = 0
    for _session, symbols, since, until in ranges:
        differing.extend(bar_differences(warehouse, symbols, since, until))
        lo, hi = minute_range(since, until)
        minutes += len(symbols) * max(0, (hi - lo) // 60_000)
    return dg.AssetCheckResult(
        passed=not differing,
        metadata={
            "sessions": len(ranges),
            "symbol_minutes_checked": minutes,
            "differing_minutes": len(differing),
            "differences": dg.MetadataValue.json(differing[:50]),
        },
    )


live_checks = [live_bars_equal_trades]
