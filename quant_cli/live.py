"""``quant live``: the live Binance pipeline in the foreground, with a status line."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from dataclasses import asdict

import typer

from quant_resources import settings
from quant_resources.live.status_line import StatusLine

ENVIRONMENT = """
Environment (read by this command):

  BINANCE_WS_URL / BINANCE_REST_URL   bare bases of the exchange (default Binance spot)

  CLICKHOUSE_URL   warehouse (default: the local warehouse of QUANT_HOME)

  QUANT_HOME       local state: session logs, the local warehouse (default .quant/)

  LAKE_URL         where closed session logs are uploaded (default file://$QUANT_HOME/lake)

  NATS_URL         publish normalised events on v1.market.* when set

  REDIS_URL        keep the latest values and a stream of final bars in Redis when set
"""


def live(
    symbols: str = typer.Option("btcusdt,ethusdt", help="Comma-separated Binance symbols."),
    streams: str = typer.Option(
        "aggTrade,bookTicker",
        help="aggTrade, trade, bookTicker, depth (100 ms diffs: order books), depth1s (1 s).",
    ),
    book_depth: int = typer.Option(20, min=1, help="Levels a side in each book snapshot."),
    book_interval_ms: int = typer.Option(
        1000, min=1, help="Exchange milliseconds between book snapshots."
    ),
    duration: float = typer.Option(None, help="Stop cleanly after this many seconds."),
    lateness_ms: int = typer.Option(2000, help="Exchange-time lateness before a bar is final."),
    json_summary: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    max_outage: float = typer.Option(
        60.0, help="Stop (exit 1) after this many seconds without a successful warehouse write."
    ),
) -> None:
    """Ingest Binance streams into ClickHouse until --duration ends or SIGTERM/Ctrl-C."""
    from quant_resources.binance.urls import (
        BinanceConfigError,
        parse_streams,
        parse_symbols,
        rest_base,
        ws_base,
    )
    from quant_resources.warehouse import WarehouseError, WarehouseResource

    try:
        config_args = {
            "symbols": parse_symbols(symbols),
            "streams": parse_streams(streams),
            "ws_url": ws_base(),
            "rest_url": rest_base(),
            "book_depth": book_depth,
            "book_interval_ms": book_interval_ms,
        }
    except BinanceConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc
    # clickhouse-connect logs each failed request itself; the error below says it once.
    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)
    warehouse = WarehouseResource()
    try:
        # A warehouse that cannot take the rows is found now, in one line, not as a flood of
        # failed inserts later.
        warehouse.table_columns("trades")
    except WarehouseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"warehouse {warehouse.display_url}", err=True)
    try:
        summary = run_live(
            duration_s=duration,
            lateness_ms=lateness_ms,
            interactive=sys.stderr.isatty(),
            max_outage_s=max_outage,
            **config_args,
        )
    except WarehouseOutage as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if json_summary:
        typer.echo(json.dumps(asdict(summary), default=str))
    else:
        typer.echo(describe(summary))


class WarehouseOutage(RuntimeError):
    """The warehouse took no write for too long: the session stopped (its log is closed)."""


def run_live(interactive: bool = False, max_outage_s: float | None = None, **config_args):
    """Build the pipeline from the environment and run it; SIGTERM/SIGINT stop it cleanly.
    A warehouse outage is logged once (and its end once); past ``max_outage_s`` the session
    stops and :class:`WarehouseOutage` says so."""
    from quant_resources.lake import LakeResource
    from quant_resources.live.outage import OutageWatch
    from quant_resources.live.pipeline import LiveConfig, LivePipeline
    from quant_resources.settings import quant_home
    from quant_resources.warehouse import WarehouseResource

    config = LiveConfig(
        session_root=quant_home() / "sessions",
        nats_url=settings.nats_url(),
        redis_url=settings.redis_url(),
        **config_args,
    )
    warehouse = WarehouseResource()
    pipeline = LivePipeline(config, warehouse, LakeResource())
    outage = OutageWatch(warehouse.display_url, max_outage_s)
    line = StatusLine(config.duration_s) if interactive else None

    def on_status(summary, pipeline) -> None:
        outage(summary, pipeline)
        if line is not None:
            line(summary, pipeline)

    pipeline.status = on_status

    async def main():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, pipeline.request_stop)
        return await pipeline.run()

    try:
        summary = asyncio.run(main())
    except RuntimeError as exc:
        if not pipeline.sinks["warehouse"].pending:
            raise
        # The stop could not write what it had (the session log holds it): one line, no trace.
        raise WarehouseOutage(outage.gave_up or str(exc)) from None
    finally:
        outage.close()
        if line is not None:
            line.end()
    if outage.gave_up:
        raise WarehouseOutage(outage.gave_up)
    return summary


def _pairs(counts: dict) -> str:
    shown = [f"{name} {count:,}" for name, count in sorted(counts.items()) if count]
    return ", ".join(shown) or "none"


def _books_line(books: dict) -> str:
    if not books:
        return ""
    return (
        f"  books       {books['updates']:,} level changes, {books['snapshots']:,} snapshots, "
        f"{books['resyncs']} resyncs ({_pairs(books['faults'])}), "
        f"{books['snapshot_requests']} REST snapshots; rejected {_pairs(books['rejects'])}\n"
    )


def _redis_line(redis: dict | None) -> str:
    if not redis:
        return ""
    return (
        f"  redis       {redis['written']:,} latest values, "
        f"{redis['stream_written']:,} final bars streamed, "
        f"{redis['failures']} failed writes in {redis['outages']} outages\n"
    )


def describe(summary) -> str:
    from quant_resources.warehouse import WarehouseResource

    return (
        f"\nsession {summary.session_id} ({summary.seconds:.1f} s)\n"
        f"  received    {summary.frames:,} frames: {summary.trades:,} trades, "
        f"{summary.quotes:,} quotes; {summary.bars:,} bar versions\n"
        f"  repaired    {summary.gaps} gaps, {summary.trades_repaired:,} trades from REST "
        f"({summary.rest_requests} requests); {summary.duplicates:,} duplicates dropped; "
        f"{summary.dropped_late:,} trades too late for their bars (stored, not in bars_1m)\n"
        f"  connection  {summary.reconnects} reconnects, {summary.handovers} handovers, "
        f"{summary.drops:,} frames dropped in the queue\n"
        f"  rejected    {_pairs(summary.rejects)}\n"
        f"{_books_line(getattr(summary, 'books', {}))}"
        f"  written     {_pairs(summary.rows_written)} to {WarehouseResource().display_url}\n"
        + _redis_line(summary.sinks.get("redis"))
        + f"  session log {summary.session_dir}\n"
        f"  digest      {summary.final_digest}"
    )
