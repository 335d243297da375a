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
    path: Path | None = typer.Option(
        None,
        "--path",
        help="Data directory (created if missing). Default: QUANT_HOME/warehouse, the directory "
        "local clients find the server through.",
        show_default=False,
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; loopback by default."),
    port: int = typer.Option(8123, help="HTTP port."),
    user: str = typer.Option("default", help="User clients must authenticate as."),
    password: str | None = typer.Option(
        None,
        envvar="QUANT_WAREHOUSE_PASSWORD",
        show_default=False,
        help="Password (prefer the QUANT_WAREHOUSE_PASSWORD environment variable). Default: "
        "one generated once and kept in DIR/.quant-password (mode 0600).",
    ),
    allowed_host: list[str] = typer.Option(
        [],
        "--allowed-host",
        help="Another name the Host header may carry (name or name:port); repeatable. "
        "127.0.0.1, localhost, [::1] and the bound address are always allowed.",
    ),
    cors_origin: list[str] = typer.Option(
        [],
        "--cors-origin",
        envvar="QUANT_WAREHOUSE_CORS_ORIGINS",
        help="Browser origin CORS answers (exactly, never *); repeatable, or space/comma "
        "separated in QUANT_WAREHOUSE_CORS_ORIGINS. None by default.",
    ),
    log_level: str = typer.Option("info", help="uvicorn log level."),
) -> None:
    """Serve DIR over ClickHouse's HTTP protocol so several processes can share it."""
    from quant_dev.warehouse_server import AlreadyServing, EmptyPassword
    from quant_dev.warehouse_server import serve as run
    from quant_resources.settings import warehouse_dir

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    origins = tuple(o for value in cors_origin for o in value.split(",") if o.strip())
    try:
        run(
            path or warehouse_dir(),
            host=host,
            port=port,
            user=user,
            password=password,
            log_level=log_level,
            allowed_hosts=tuple(allowed_host),
            cors_origins=origins,
        )
    except (AlreadyServing, EmptyPassword) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
