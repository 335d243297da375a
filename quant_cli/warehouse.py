"""``quant warehouse``: the local chDB warehouse endpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

app = typer.Typer(
    help="Local ClickHouse-compatible warehouse backed by chDB.", no_args_is_help=True
)


@app.command()
def serve(
    path: Path = typer.Option(..., "--path", help="Data directory (created if missing)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; loopback by default."),
    port: int = typer.Option(8123, help="HTTP port."),
    user: str = typer.Option("default", help="User clients must authenticate as."),
    password: str = typer.Option(
        "",
        envvar="QUANT_WAREHOUSE_PASSWORD",
        show_default=False,
        help="Password (prefer the QUANT_WAREHOUSE_PASSWORD environment variable).",
    ),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve DIR over ClickHouse's HTTP protocol so several processes can share it."""
    from quant_dev.warehouse_server import AlreadyServing
    from quant_dev.warehouse_server import serve as run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        run(path, host=host, port=port, user=user, password=password, log_level=log_level)
    except AlreadyServing as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
