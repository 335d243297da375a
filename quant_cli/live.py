"""``quant live``: the live Binance pipeline in the foreground, with a status line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import asdict

import typer


def live(
    symbols: str = typer.Option("btcusdt,ethusdt", help="Comma-separated Binance symbols."),
    streams: str = typer.Option("aggTrade,bookTicker", help="aggTrade, trade, bookTicker."),
    duration: float = typer.Option(None, help="Stop cleanly after this many seconds."),
    lateness_ms: int = typer.Option(2000, help="Exchange-time lateness before a bar is final."),
    json_summary: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Ingest Binance streams into ClickHouse until --duration ends or SIGTERM/Ctrl-C."""
    from quant_resources.binance.urls import (
        BinanceConfigError,
        parse_streams,
        parse_symbols,
        rest_base,
        ws_base,
    )

    try:
        config_args = {
            "symbols": parse_symbols(symbols),
            "streams": parse_streams(streams),
            "ws_url": ws_base(),
            "rest_url": rest_base(),
        }
    except BinanceConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc
    summary = run_live(
        duration_s=duration, lateness_ms=lateness_ms, interactive=sys.stderr.isatty(), **config_args
    )
    if json_summary:
        typer.echo(json.dumps(asdict(summary), default=str))
    else:
        typer.echo(_describe(summary))


def run_live(interactive: bool = False, **config_args):
    """Build the pipeline from the environment and run it; SIGTERM/SIGINT stop it cleanly."""
    from quant_resources.lake import LakeResource
    from quant_resources.live.pipeline import LiveConfig, LivePipeline
    from quant_resources.settings import quant_home
    from quant_resources.warehouse import WarehouseResource

    config = LiveConfig(
        session_root=quant_home() / "sessions",
        nats_url=os.environ.get("NATS_URL") or None,
        **config_args,
    )
    pipeline = LivePipeline(config, WarehouseResource(), LakeResource())
    if interactive:
        pipeline.status = _status_line

    async def main():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, pipeline.request_stop)
        return await pipeline.run()

    return asyncio.run(main())


def _status_line(summary, pipeline) -> None:
    sys.stderr.write(
        f"\r{summary.frames:>10,} frames {summary.trades:>9,} trades {summary.bars:>6,} bars "
        f"gaps {summary.gaps} repaired {summary.trades_repaired} dups {summary.duplicates} "
        f"queue {pipeline.queue.qsize()} buffered {pipeline.sink.buffered()}   "
    )
    sys.stderr.flush()


def _describe(summary) -> str:
    return (
        f"\nsession {summary.session_id} ({summary.seconds:.1f} s)\n"
        f"  frames {summary.frames:,}  trades {summary.trades:,}  quotes {summary.quotes:,}  "
        f"bars {summary.bars:,}\n"
        f"  duplicates dropped {summary.duplicates}  gaps {summary.gaps}  trades repaired "
        f"{summary.trades_repaired}  REST requests {summary.rest_requests}\n"
        f"  reconnects {summary.reconnects}  handovers {summary.handovers}  "
        f"queue drops {summary.drops}  rejected frames {summary.rejects}\n"
        f"  rows written {summary.rows_written}\n"
        f"  session log {summary.session_dir} digest {summary.final_digest}"
    )
