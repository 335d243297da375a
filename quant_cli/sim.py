"""``quant sim``: local simulators of the external data services, for tests and the demo."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import typer

app = typer.Typer(help="Local simulators of external market-data services.", no_args_is_help=True)


@app.command("alpaca")
def alpaca(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(0, help="Port; 0 picks a free one (printed on start-up)."),
    seed: int = typer.Option(7, help="Seed of the synthetic market and of the faults."),
    now: str = typer.Option(
        None, help="Fixed ISO 8601 time the server takes as now (default: the real time)."
    ),
    faults: str = typer.Option(
        "",
        help="Faults, e.g. '429:0.1:1,500:0.05,slow:0.05:2.0,truncate:0.02,hangup:0.01,"
        "badrow:0.01,die_after_pages:3' (probability per request, deterministic per seed).",
    ),
    page_limit: int = typer.Option(None, min=1, help="Cap on items per page (forces pages)."),
) -> None:
    """Serve Alpaca's market-data API (stock and option bars, option chains) on synthetic data.

    Accepts the key pair QUANT_SIM_ALPACA_KEY / QUANT_SIM_ALPACA_SECRET (default test/test).
    """
    from quant_dev.alpaca_sim.app import SimConfig
    from quant_dev.alpaca_sim.faults import FaultSpecError, parse
    from quant_dev.alpaca_sim.server import serve

    fixed = None
    if now:
        try:
            fixed = datetime.fromisoformat(now)
        except ValueError:
            raise typer.BadParameter(f"{now!r} is not ISO 8601", param_hint="--now") from None
        if fixed.tzinfo is None:
            raise typer.BadParameter(f"{now!r} has no time zone", param_hint="--now")
    try:
        parse(faults)
    except FaultSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--faults") from None
    config = SimConfig.from_env(seed=seed, now=fixed, faults=faults, page_limit=page_limit)
    serve(config, host, port)


@app.command("binance")
def binance(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(0, help="Port for WS and REST; 0 picks a free one (printed)."),
    symbols: str = typer.Option("btcusdt,ethusdt", help="Comma-separated symbols to trade."),
    rate: str = typer.Option(
        "200",
        help="Aggregate trades per second over all symbols (msgs/s per stream); with --source: "
        "frames published per second, 0 or 'max' as fast as the clients read.",
    ),
    source: Path = typer.Option(
        None,
        help="Serve a recording instead of the synthetic market: a session log directory, a "
        "cryptofeed or an hftbacktest capture (frames as recorded; REST from its trades).",
    ),
    faults: str = typer.Option(
        "",
        help="Faults, e.g. 'disconnect:5,stall:3:2.0,malformed:10,duplicate:20,reorder:10,"
        "drops:5:10,shutdown:2,slowreader:1' (a count, or a rate per frame like 0.001; seeded;"
        " drops:N:k leaves out k trade frames N times).",
    ),
    seed: int = typer.Option(7, help="Seed of the market and of the faults."),
    start_trade_id: int = typer.Option(1, min=0, help="First trade id of every symbol."),
    ping_interval: float = typer.Option(20.0, min=0.05, help="Seconds between server pings."),
    pong_timeout: float = typer.Option(60.0, min=0.05, help="Seconds a client has to pong."),
    max_conn_seconds: float = typer.Option(86_400.0, min=0.1, help="Connection lifetime."),
    weight_limit: int = typer.Option(6000, min=1, help="REST request weight per IP per minute."),
    history: int = typer.Option(2_000_000, min=1000, help="Trades kept per symbol for REST."),
    max_send_buffer: int = typer.Option(
        8 * 1024 * 1024, min=1024, help="Bytes queued for a client before it is dropped as slow."
    ),
    fault_gap: int = typer.Option(1000, min=1, help="Mean data frames between counted faults."),
    # tlive: a test puts a minute boundary a few seconds ahead instead of waiting for one.
    minute_in: float = typer.Option(
        None,
        min=0,
        max=60,
        help="Set the synthetic market's exchange clock back (under a minute) so that an "
        "exchange minute starts this many seconds after start-up (default: the wall clock).",
    ),
) -> None:
    """Serve Binance spot combined streams and /api/v3 market data from a seeded market, or
    from a recording (--source: one publication order for all clients, the exchange clock at
    the last published event, REST from the trades published so far).

    Prints 'listening on ws://HOST:PORT (rest http://HOST:PORT)' once ready.
    """
    from quant_dev.binance_sim.faults import FaultSpecError, parse
    from quant_dev.binance_sim.market import spec_for
    from quant_dev.binance_sim.server import SimConfig, serve

    names = [s.strip().lower() for s in symbols.split(",") if s.strip()]
    try:
        per_s = 0.0 if rate.strip().lower() == "max" else float(rate)
    except ValueError:
        per_s = -1.0  # refused below
    if per_s < 0 or (source is None and per_s <= 0):
        raise typer.BadParameter(
            f"{rate!r} must be a number > 0 (0 or 'max' only with --source)", param_hint="--rate"
        )
    try:
        for name in names or [""]:
            spec_for(name)
        parse(faults)
    except (ValueError, FaultSpecError) as exc:
        raise typer.BadParameter(str(exc)) from None
    config = SimConfig(
        symbols=names,
        rate=per_s or 1.0,
        faults=faults,
        seed=seed,
        start_trade_id=start_trade_id,
        ping_interval=ping_interval,
        pong_timeout=pong_timeout,
        max_conn_seconds=max_conn_seconds,
        weight_limit=weight_limit,
        history=history,
        max_send_buffer=max_send_buffer,
        fault_gap=fault_gap,
    )
    if minute_in is not None:  # tlive
        from quant_dev.binance_sim import clock

        clock.set_offset(-(int((time.time() + minute_in) * 1000) % 60_000))
    sim = None
    if source is not None:
        from quant_dev.binance_sim.recorded import RecordedSimulator, SourceError, load_source

        try:
            sim = RecordedSimulator(config, load_source(source), per_s)
        except (SourceError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--source") from None
    serve(config, host, port, sim)


@app.command("binance-archive")
def binance_archive(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(0, help="Port; 0 picks a free one (printed on start-up)."),
    symbols: str = typer.Option("btcusdt,ethusdt", help="Comma-separated symbols."),
    first: str = typer.Option("2024-12-01", help="First UTC day served (YYYY-MM-DD)."),
    last: str = typer.Option("2025-01-31", help="Last UTC day served (YYYY-MM-DD)."),
    aggs_per_day: int = typer.Option(20_000, min=1, help="Aggregate trades per symbol-day."),
    header_from: str = typer.Option(
        None, help="Files starting on or after this day carry a header row (default: none)."
    ),
    seed: int = typer.Option(7, help="Seed of the market."),
    faults: str = typer.Option(
        "",
        help="Faults by file, e.g. 'missing:BTCUSDT-aggTrades-2024-12-02,corrupt:*-trades-*,"
        "checksum:P,badrow:P,columns:P,outside:P,zeroprice:P,truncate:P,slow:P:2.0,5xx:P:2' "
        "(P: fnmatch over the file name without .zip).",
    ),
) -> None:
    """Serve Binance's public data archive (daily and monthly spot zips with .CHECKSUM files)
    generated from the seeded exchange simulator's market.

    Point BINANCE_ARCHIVE_URL at the printed 'listening on http://HOST:PORT'.
    """
    from datetime import date

    from quant_dev.archive_sim.app import ArchiveSimConfig, serve
    from quant_dev.archive_sim.faults import FaultSpecError, parse

    def day(text: str, hint: str) -> date:
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not YYYY-MM-DD", param_hint=hint) from None

    names = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    start, end = day(first, "--first"), day(last, "--last")
    if end < start:
        raise typer.BadParameter(f"{last} is before {first}", param_hint="--last")
    try:
        parse(faults)
    except FaultSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--faults") from None
    config = ArchiveSimConfig(
        symbols=names,
        first=start,
        last=end,
        seed=seed,
        aggs_per_day=aggs_per_day,
        header_from=day(header_from, "--header-from") if header_from else None,
        faults=faults,
    )
    try:
        serve(config, host, port)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--symbols") from None
