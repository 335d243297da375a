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
    max_body_bytes: int = typer.Option(
        1 << 30, envvar="QUANT_WAREHOUSE_MAX_BODY_BYTES", help="Largest request body on the wire."
    ),
    max_decompressed_bytes: int = typer.Option(
        4 << 30,
        envvar="QUANT_WAREHOUSE_MAX_DECOMPRESSED_BYTES",
        help="Largest INSERT body after Content-Encoding decoding.",
    ),
    max_query_bytes: int = typer.Option(
        16 << 20, envvar="QUANT_WAREHOUSE_MAX_QUERY_BYTES", help="Largest query text in a body."
    ),
    max_execution_time: float = typer.Option(
        300.0,
        envvar="QUANT_WAREHOUSE_MAX_EXECUTION_TIME",
        help="Seconds any query may run; clients may ask for less, never more.",
    ),
    max_concurrent_queries: int = typer.Option(
        8, envvar="QUANT_WAREHOUSE_MAX_CONCURRENT_QUERIES", help="chDB queries running at once."
    ),
    result_memory_bytes: int = typer.Option(
        256 << 20,
        envvar="QUANT_WAREHOUSE_RESULT_MEMORY_BYTES",
        help="Unread streamed result kept in memory per query before spooling to disk.",
    ),
    result_spool_bytes: int = typer.Option(
        4 << 30,
        envvar="QUANT_WAREHOUSE_RESULT_SPOOL_BYTES",
        help="Unread streamed result spooled to disk per query before the query fails.",
    ),
    max_connections: int = typer.Option(
        4096, envvar="QUANT_WAREHOUSE_MAX_CONNECTIONS", help="Open connections at once."
    ),
    header_timeout: float = typer.Option(
        10.0, envvar="QUANT_WAREHOUSE_HEADER_TIMEOUT", help="Seconds to send a request's headers."
    ),
    idle_timeout: float = typer.Option(
        5.0, envvar="QUANT_WAREHOUSE_IDLE_TIMEOUT", help="Seconds a kept-alive connection may idle."
    ),
    body_timeout: float = typer.Option(
        60.0,
        envvar="QUANT_WAREHOUSE_BODY_TIMEOUT",
        help="Seconds a request body may pause, or a response wait for its reader.",
    ),
) -> None:
    """Serve DIR over ClickHouse's HTTP protocol so several processes can share it.

    The limits (sizes, timeouts, concurrency) bound what one client can cost the others; each
    option also reads its QUANT_WAREHOUSE_<NAME> environment variable."""
    from quant_dev.warehouse_server import AlreadyServing, EmptyPassword
    from quant_dev.warehouse_server import serve as run
    from quant_dev.warehouse_server.limits import Limits
    from quant_resources.settings import warehouse_dir

    try:
        limits = Limits(
            max_body_bytes=max_body_bytes,
            max_decompressed_bytes=max_decompressed_bytes,
            max_query_bytes=max_query_bytes,
            max_execution_time=max_execution_time,
            max_concurrent_queries=max_concurrent_queries,
            result_memory_bytes=result_memory_bytes,
            result_spool_bytes=result_spool_bytes,
            max_connections=max_connections,
            header_timeout=header_timeout,
            idle_timeout=idle_timeout,
            body_timeout=body_timeout,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

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
            limits=limits,
        )
    except (AlreadyServing, EmptyPassword) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
