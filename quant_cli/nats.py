"""``quant nats``: watch the normalised events ``quant live`` publishes to NATS."""

from __future__ import annotations

import asyncio
import signal
import sys

import orjson
import typer

from quant_resources import settings

app = typer.Typer(help="NATS: watch the normalised market events.", no_args_is_help=True)


@app.command()
def tail(
    subjects: list[str] = typer.Argument(
        ..., help="Subjects, wildcards allowed, e.g. 'v1.market.trades.binance.*'."
    ),
    count: int = typer.Option(None, "--count", "-n", min=1, help="Exit after N messages."),
    url: str = typer.Option(None, help="NATS server (default: NATS_URL)."),
) -> None:
    """Print each message as one JSON line: {"subject", "data", "headers"?}; data is the payload
    as JSON (as a string when it is not JSON). Stops after --count or on SIGTERM/Ctrl-C."""
    server = url or settings.nats_url()
    if not server:
        raise typer.BadParameter("give --url or set NATS_URL", param_hint="--url")
    try:
        received = asyncio.run(_tail(server, subjects, count))
    except OSError as exc:
        typer.echo(f"FAILED: cannot reach NATS at {server}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{received} messages", err=True)


async def _tail(server: str, subjects: list[str], count: int | None) -> int:
    import nats

    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    out = sys.stdout
    interactive = out.isatty()
    received = 0

    async def on_message(msg) -> None:
        nonlocal received
        if done.is_set():
            return
        try:
            data = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            data = msg.data.decode(errors="replace")
        line = {"subject": msg.subject, "data": data}
        if msg.headers:
            line["headers"] = msg.headers
        out.write(orjson.dumps(line).decode() + "\n")
        if interactive:
            out.flush()
        received += 1
        if count is not None and received >= count:
            done.set()

    async def on_error(exc: Exception) -> None:
        typer.echo(f"nats: {exc}", err=True)

    nc = await nats.connect(
        server, name="quant-nats-tail", error_cb=on_error, allow_reconnect=True, connect_timeout=5
    )
    try:
        for subject in subjects:
            # A live feed can burst faster than a terminal prints: let the client queue a lot
            # rather than cut the subscription off as a slow consumer.
            await nc.subscribe(
                subject, cb=on_message, pending_msgs_limit=2_000_000, pending_bytes_limit=2**30
            )
        await nc.flush()  # the server has the subscriptions: nothing published from now is missed
        typer.echo(f"subscribed to {', '.join(subjects)} on {server}", err=True)
        await done.wait()
    finally:
        await nc.drain()
        out.flush()
    return received
