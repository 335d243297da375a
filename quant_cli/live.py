"""``quant live``: the live Binance pipeline in the foreground, with a status line."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import signal
import sys
import time
from collections import deque
from dataclasses import asdict

import typer

from quant_resources import settings

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
    summary = run_live(
        duration_s=duration, lateness_ms=lateness_ms, interactive=sys.stderr.isatty(), **config_args
    )
    if json_summary:
        typer.echo(json.dumps(asdict(summary), default=str))
    else:
        typer.echo(describe(summary))


def run_live(interactive: bool = False, **config_args):
    """Build the pipeline from the environment and run it; SIGTERM/SIGINT stop it cleanly."""
    from quant_resources.lake import LakeResource
    from quant_resources.live.pipeline import LiveConfig, LivePipeline
    from quant_resources.settings import quant_home
    from quant_resources.warehouse import WarehouseResource

    config = LiveConfig(
        session_root=quant_home() / "sessions",
        nats_url=settings.nats_url(),
        redis_url=settings.redis_url(),
        **config_args,
    )
    pipeline = LivePipeline(config, WarehouseResource(), LakeResource())
    if interactive:
        pipeline.status = StatusLine(config.duration_s)

    async def main():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, pipeline.request_stop)
        return await pipeline.run()

    return asyncio.run(main())


class StatusLine:
    """One refreshed terminal line: elapsed (and remaining), trades and their rate over the last
    few seconds, lag of this minute, connection state, open gaps."""

    def __init__(self, duration_s: float | None, window_s: float = 5.0) -> None:
        self.duration_s = duration_s
        self.window_s = window_s
        self.started = time.monotonic()
        self.samples: deque[tuple[float, int]] = deque()

    def __call__(self, summary, pipeline) -> None:
        sys.stderr.write("\r" + self.render(summary, pipeline) + "\x1b[K")
        sys.stderr.flush()

    def render(self, summary, pipeline) -> str:
        from quant_core.telemetry import percentile

        now = time.monotonic()
        self.samples.append((now, summary.trades))
        while self.samples and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        rate = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
        elapsed = now - self.started
        clock = _duration(elapsed)
        if self.duration_s:
            clock += f" (-{_duration(math.ceil(max(0.0, self.duration_s - elapsed)))})"
        lags = pipeline.lags_ms()
        lag = f"lag p50 {percentile(lags, 50):.0f} ms" if lags else "lag -"
        state = "connected" if pipeline.client.settled(0.0) else "reconnecting"
        gaps = len(pipeline.kernel.open_gaps())
        return (
            f"{clock}  {summary.trades:,} trades ({rate:,.0f}/s)  {summary.bars:,} bars  {lag}  "
            f"{state}  gaps open {gaps}, repaired trades {summary.trades_repaired:,}"
        )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:d}:{secs:02d}"


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
        f"({summary.rest_requests} requests); {summary.duplicates:,} duplicates dropped\n"
        f"  connection  {summary.reconnects} reconnects, {summary.handovers} handovers, "
        f"{summary.drops:,} frames dropped in the queue\n"
        f"  rejected    {_pairs(summary.rejects)}\n"
        f"{_books_line(getattr(summary, 'books', {}))}"
        f"  written     {_pairs(summary.rows_written)} to {WarehouseResource().display_url}\n"
        + _redis_line(summary.sinks.get("redis"))
        + f"  session log {summary.session_dir}\n"
        f"  digest      {summary.final_digest}"
    )
