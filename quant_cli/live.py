"""``quant live``: the live Binance pipeline in the foreground, with a status line.

When QUANT_HOME holds a Dagster instance (``make demo`` and ``make dev`` keep one in
``QUANT_HOME/dagster``; ``DAGSTER_HOME`` names another) the session runs as a run of
``live_ingest_job`` in it, in this process: the UI lists it under Runs and plots its per-minute
numbers on ``live_trades`` and ``live_bars_1m``, as for a run the UI started; Terminate there
stops it like Ctrl-C (exit 0, run canceled). Without one (or
with ``--no-dagster``) it runs without Dagster, which also keeps the start fast.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path

import typer

from quant_resources import settings
from quant_resources.live.status_line import StatusLine

ENVIRONMENT = """
Environment (read by this command):

  BINANCE_WS_URL / BINANCE_REST_URL   bare bases of the exchange (default Binance spot)

  CLICKHOUSE_URL   warehouse (default: the local warehouse of QUANT_HOME)

  QUANT_HOME       local state: session logs, the local warehouse (default .quant/)

  DAGSTER_HOME     Dagster instance the session is a run in (default $QUANT_HOME/dagster
                   when it exists, as after make demo / make dev)

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
    profile: Path = typer.Option(
        None,
        "--profile",
        help=(
            "Profile the session with cProfile and write the stats to this file at the stop "
            "(read with python -m pstats FILE, or snakeviz); its path is in the summary."
        ),
        dir_okay=False,
    ),
    dagster: bool = typer.Option(
        None,
        "--dagster/--no-dagster",
        help=(
            "Run as a run of live_ingest_job in the Dagster instance (the UI shows it). "
            "Default: when DAGSTER_HOME is set or QUANT_HOME/dagster exists."
        ),
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
    from quant_resources.warehouse_client import Warehouse, WarehouseError  # klive: no Dagster

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
    warehouse = Warehouse()  # klive
    try:
        # A warehouse that cannot take the rows is found now, in one line, not as a flood of
        # failed inserts later.
        warehouse.table_columns("trades")
    except WarehouseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"warehouse {warehouse.display_url}", err=True)
    instance = dagster_instance_home(dagster)
    profiler = start_profile(profile)
    try:
        if instance is None:
            summary = run_live(
                duration_s=duration,
                lateness_ms=lateness_ms,
                interactive=sys.stderr.isatty(),
                max_outage_s=max_outage,
                **config_args,
            )
        else:
            summary = run_in_dagster(
                instance,
                symbols=symbols,
                streams=streams,
                duration_s=duration,
                lateness_ms=lateness_ms,
                book_depth=book_depth,
                book_interval_ms=book_interval_ms,
                max_outage_s=max_outage,
                status_line=sys.stderr.isatty(),
            )
    except (WarehouseOutage, LiveRunFailed) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        written = stop_profile(profiler, profile)
    summary.profile = written
    if json_summary:
        run = getattr(summary, "dagster_run", None)
        typer.echo(json.dumps({**asdict(summary), "dagster_run": run}, default=str))
    else:
        typer.echo(describe(summary))


def start_profile(path: Path | None):
    """A running cProfile profiler when ``--profile`` names a file (its directory checked now, not
    after the session), else None."""
    if path is None:
        return None
    import cProfile

    if not path.parent.is_dir():
        raise typer.BadParameter(f"--profile {path}: directory {path.parent} does not exist")
    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def stop_profile(profiler, path: Path | None) -> str | None:
    """Stop profiling and write the stats (also after a failed session); -> the file written."""
    if profiler is None or path is None:
        return None
    profiler.disable()
    profiler.dump_stats(path)
    typer.echo(f"profile written to {path}", err=True)
    return str(path)


class WarehouseOutage(RuntimeError):
    """The warehouse took no write for too long: the session stopped (its log is closed)."""


def dagster_instance_home(wanted: bool | None) -> Path | None:
    """The Dagster instance the session is a run in: ``DAGSTER_HOME``, else the embedded one in
    ``QUANT_HOME/dagster`` when it exists (or is ``wanted``: then it is made); None without
    one, or when not ``wanted``."""
    from quant_cli.dev import dagster_home
    from quant_resources.settings import quant_home

    if wanted is False:
        return None
    named = settings.setting("DAGSTER_HOME")
    embedded = quant_home() / "dagster"
    if named and Path(named).resolve() != embedded.resolve():
        return Path(named)
    # ui3: the embedded one goes through dagster_home (an old file gets its run launcher)
    if named or wanted or (embedded / "dagster.yaml").exists():
        return dagster_home(quant_home())
    return None


class LiveRunFailed(RuntimeError):
    """The run of ``live_ingest_job`` failed (its reason is the step's one-line failure)."""


FAILURE_PREFIX = "dagster._core.definitions.events.Failure: "
# Dagster's own console lines stay out of the terminal: the status line and summary say it,
# and a failure is our one `error:` line (Dagster's ERROR event carries a stack trace). The
# run's full event log is in the instance either way.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def run_in_dagster(home: Path, **config):
    """A run of ``live_ingest_job`` in the instance at ``home``, in this process (the op reads
    the same environment as :func:`run_live`); SIGTERM/SIGINT stop it cleanly and it
    succeeds. Returns the session summary; a failed run raises :class:`LiveRunFailed` with its
    one-line reason."""
    os.environ["DAGSTER_HOME"] = str(home)  # where DagsterInstance.get() looks
    import dagster as dg

    from quant_assets.live import TERMINAL_SUMMARIES
    from quant_assets.live_runs import fail_lost_terminal_runs, terminal_run_tags
    from quant_definitions import defs

    instance = dg.DagsterInstance.get()
    # An earlier terminal run killed with SIGKILL would otherwise stay "started" for ever.
    for line in fail_lost_terminal_runs(instance):
        typer.echo(f"marked failed: {line}", err=True)
    result = defs.resolve_job_def("live_ingest_job").execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={**QUIET_LOGS, "ops": {"live_ingest": {"config": {**config, "terminal": True}}}},
        tags=terminal_run_tags(),
    )
    summary = TERMINAL_SUMMARIES.pop(result.run_id, None)
    ended = instance.get_run_by_id(result.run_id)
    if summary is not None and ended is not None and ended.status == dg.DagsterRunStatus.CANCELED:
        # Terminate in the UI (or `dagster run terminate`): the same clean stop as Ctrl-C.
        typer.echo(f"run {result.run_id} was stopped from Dagster (Terminate)", err=True)
        summary.dagster_run = f"{result.run_id} of live_ingest_job in {home}, canceled"
        return summary
    if not result.success or summary is None:
        failure = result.get_step_failure_events()
        error = failure[0].event_specific_data.error if failure else None
        reason = error.message.strip().removeprefix(FAILURE_PREFIX) if error else "failed"
        raise LiveRunFailed(f"run {result.run_id} of live_ingest_job: {reason}")
    summary.dagster_run = f"{result.run_id} of live_ingest_job in {home}"
    return summary


def run_live(interactive: bool = False, max_outage_s: float | None = None, **config_args):
    """Build the pipeline from the environment and run it; SIGTERM/SIGINT stop it cleanly.
    A warehouse outage is logged once (and its end once); past ``max_outage_s`` the session
    stops and :class:`WarehouseOutage` says so."""
    import uvloop  # klive

    from quant_resources.lake_client import Lake  # klive: no Dagster
    from quant_resources.live.outage import OutageWatch
    from quant_resources.live.pipeline import LiveConfig, LivePipeline
    from quant_resources.settings import quant_home
    from quant_resources.warehouse_client import Warehouse  # klive: no Dagster

    config = LiveConfig(
        session_root=quant_home() / "sessions",
        nats_url=settings.nats_url(),
        redis_url=settings.redis_url(),
        **config_args,
    )
    warehouse = Warehouse()  # klive
    pipeline = LivePipeline(config, warehouse, Lake())  # klive
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
        summary = uvloop.run(main())  # klive: the faster event loop (a dependency already)
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
    from quant_resources.warehouse_client import Warehouse  # klive: no Dagster

    return (
        f"\nsession {summary.session_id} ({summary.seconds:.1f} s)\n"
        f"  received    {summary.frames:,} frames: {summary.trades:,} trades, "
        f"{summary.quotes:,} quotes; {summary.bars:,} bar versions\n"
        f"  repaired    {summary.gaps} gaps, {summary.trades_repaired:,} trades from REST "
        f"({summary.rest_requests} requests); {summary.duplicates:,} duplicates dropped; "
        f"{summary.dropped_late:,} trades too late for their bars (stored, not in bars_1m)\n"
        f"  lost        {getattr(summary, 'ids_absent', 0):,} trade ids missing from the stream "
        "that REST lacks too (lost for good)\n"
        f"  connection  {summary.reconnects} reconnects, {summary.handovers} handovers, "
        f"{summary.drops:,} frames dropped in the queue\n"
        f"  rejected    {_pairs(summary.rejects)}\n"
        f"{_books_line(getattr(summary, 'books', {}))}"
        f"  written     {_pairs(summary.rows_written)} to {Warehouse().display_url}\n"
        + _redis_line(summary.sinks.get("redis"))
        + f"  session log {summary.session_dir}\n"
        + _run_line(getattr(summary, "dagster_run", None))
        + _profile_line(getattr(summary, "profile", None))
        + f"  digest      {summary.final_digest}"
    )


def _profile_line(path: str | None) -> str:
    return f"  profile     {path} (cProfile: python -m pstats {path})\n" if path else ""


def _run_line(run: str | None) -> str:
    return f"  dagster run {run}\n" if run else ""
