"""Live ingestion in Dagster (group ``live``): one long-running run of ``live_ingest_job``.

The run streams Binance into ClickHouse until it is cancelled (or its optional duration ends).
It reports ``live_trades`` and ``live_bars_1m`` materialisations each closed hour and at the
stop, so the UI shows counts, lag and repaired gaps without a query. Cancelling the run from
the UI stops it cleanly: the stop handler flushes every ended minute and closes the session log.
"""

import asyncio
import signal
import time

import dagster as dg
import orjson
from pydantic import Field

from quant_assets.books import BookReport  # books hook
from quant_resources.binance.urls import parse_streams, parse_symbols, rest_base, ws_base
from quant_resources.lake import LakeResource
from quant_resources.live.bar_audit import bar_differences, minute_range, session_ranges
from quant_resources.live.pipeline import LiveConfig, LivePipeline, LiveSummary
from quant_resources.settings import live_symbols, nats_url, quant_home, redis_url
from quant_resources.warehouse import WarehouseResource

LIVE_TAG = "quant/live-ingest"

live_trades = dg.AssetSpec(
    "live_trades",
    group_name="live",
    kinds={"clickhouse"},
    description="Binance trades written by the live ingestion run (ClickHouse `trades`).",
    deps=["clickhouse_schema"],
)
live_bars_1m = dg.AssetSpec(
    "live_bars_1m",
    group_name="live",
    kinds={"clickhouse"},
    description="1-minute Binance bars from the live aggregator (ClickHouse `bars_1m`).",
    deps=["live_trades"],
)


class LiveIngestConfig(dg.Config):
    symbols: str = Field(default_factory=lambda: live_symbols())
    streams: str = "aggTrade,bookTicker"
    duration_s: float | None = Field(default=None, description="None: until cancelled.")
    lateness_ms: int = 2000


def _report(context: dg.OpExecutionContext, summary: LiveSummary, scope: str) -> None:
    common = {
        "session_id": summary.session_id,
        "scope": scope,
        "gaps": summary.gaps,
        "trades_repaired": summary.trades_repaired,
        "duplicates_dropped": summary.duplicates,
        "reconnects": summary.reconnects,
    }
    context.log_event(
        dg.AssetMaterialization("live_trades", metadata={**common, "trades": summary.trades})
    )
    context.log_event(
        dg.AssetMaterialization("live_bars_1m", metadata={**common, "bars": summary.bars})
    )


@dg.op(tags={LIVE_TAG: "1"})
def live_ingest(
    context: dg.OpExecutionContext,
    config: LiveIngestConfig,
    warehouse: WarehouseResource,
    lake: LakeResource,
) -> dg.Output:
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
    )
    pipeline = LivePipeline(live_config, warehouse, lake)
    hour = {"value": int(time.time() // 3600)}
    report_books = BookReport()  # books hook: live_book_snapshots per closed hour

    def on_status(summary: LiveSummary, _pipeline: LivePipeline) -> None:
        now_hour = int(time.time() // 3600)
        if now_hour != hour["value"]:
            hour["value"] = now_hour
            _report(context, summary, "hour")
            report_books(context, summary, "hour")  # books hook

    pipeline.status = on_status

    terminated: list[int] = []

    def terminate(sig: int) -> None:
        terminated.append(sig)
        pipeline.request_stop()

    async def main() -> LiveSummary:
        loop = asyncio.get_running_loop()
        # Run termination arrives as SIGTERM/SIGINT: turn it into a clean stop.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, terminate, sig)
        return await pipeline.run()

    summary = asyncio.run(main())
    _report(context, summary, "stop")
    report_books(context, summary, "stop")  # books hook
    context.log.info(
        f"session {summary.session_id}: {summary.trades} trades, {summary.bars} bars, "
        f"{summary.gaps} gaps repaired with {summary.trades_repaired} trades"
    )
    if terminated:
        # Stopped cleanly (flushed, session closed and uploaded), but on request: the run
        # shows as cancelled in the UI, not as a success.
        raise dg.DagsterExecutionInterruptedError(
            f"terminated by signal {signal.Signals(terminated[0]).name} after a clean stop: "
            f"session {summary.session_id} closed, {summary.bars} bars written"
        )
    return dg.Output(
        summary.session_id,
        metadata={
            "frames": summary.frames,
            "trades": summary.trades,
            "bars": summary.bars,
            "final_digest": summary.final_digest,
            "stop_exchange_ms": summary.stop_exchange_ms,
        },
    )


@dg.job(
    tags={LIVE_TAG: "1"},
    executor_def=dg.in_process_executor,
    description="Binance streams -> ClickHouse, until cancelled (one run at a time).",
)
def live_ingest_job():
    live_ingest()


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
