"""``quant serve``: the data service (FastAPI on uvicorn)."""

from __future__ import annotations

import gc
import ipaddress
import logging
import signal

import typer

app = typer.Typer(help="Serve the platform's data over HTTP.", no_args_is_help=True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name could resolve anywhere


@app.command("api")
def api(
    host: str = typer.Option("127.0.0.1", help="Interface to bind; loopback by default."),
    port: int = typer.Option(8000, help="HTTP port."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    local: bool = typer.Option(
        False,
        "--local",
        help="Serve the data of QUANT_HOME (what `make demo` left): start its warehouse "
        "endpoint and private Redis too, as `make dev` does without the UI, and accept the "
        "token of QUANT_HOME/api-token.",
    ),
) -> None:
    """The data service: /v1/bars, /v1/latest, /v1/options/chain, /v1/sessions, /v1/health.

    Tokens come from QUANT_API_TOKENS; without any, only a loopback address may be bound."""
    if not local:
        serve_api(host, port, log_level)
        return
    import os

    from quant_dev.processes import warehouse_endpoint
    from quant_dev.serving import LATEST_PATH, TOKEN_FILE, curl_line, local_redis, secret_file
    from quant_resources.settings import api_tokens, quant_home, redact_url, warehouse_dir

    home = quant_home()
    token = secret_file(home / TOKEN_FILE)
    os.environ["QUANT_API_TOKENS"] = ",".join([*api_tokens(), token])
    # A stop signal is a SystemExit here, so the warehouse endpoint and Redis started below are
    # stopped too (SIGTERM would otherwise end this process at once and leave them running);
    # uvicorn, while it serves, takes both and raises them again once it has shut down.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit)
    typer.echo(f"warehouse   starting on {warehouse_dir()}")
    with warehouse_endpoint(warehouse_dir()) as url, local_redis(home) as (redis_url, note):
        os.environ["CLICKHOUSE_URL"] = url
        if redis_url:
            os.environ["REDIS_URL"] = redis_url
        typer.echo(f"redis       {redact_url(redis_url or '')} {note}".rstrip())
        base = f"http://{host}:{port}"
        typer.echo(f"data API    {base}  (token in {home / TOKEN_FILE}); Ctrl-C stops it all")
        typer.echo(f"            {curl_line(home, base, LATEST_PATH)}")
        serve_api(host, port, log_level)


def _exit(*_) -> None:
    raise SystemExit(0)


def serve_api(host: str, port: int, log_level: str) -> None:
    """uvicorn with the service, in this process, until SIGINT or SIGTERM."""
    import uvicorn

    from quant_api.app import create_app
    from quant_resources.settings import api_tokens

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    tokens = api_tokens()
    if not tokens:
        if not is_loopback(host):
            typer.echo(
                f"error: --host {host} is not a loopback address and QUANT_API_TOKENS is "
                "empty: refusing to serve data unauthenticated beyond this machine",
                err=True,
            )
            raise typer.Exit(2)
        logging.getLogger("quant_api").warning(
            "QUANT_API_TOKENS is empty: no authentication, bound to loopback %s only", host
        )
    try:
        service = create_app(tokens=tokens)
    except ValueError as exc:  # a malformed QUANT_API_* setting
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    # Everything imported and built so far lives as long as the process: out of the collector's
    # sight, a full collection no longer walks it (a pause of tens of ms in a request's answer).
    gc.collect()
    gc.freeze()
    # uvicorn writes access lines at INFO: below that level, building each one (per request,
    # only to be dropped by the logger) is skipped altogether.
    access_log = logging.getLevelName(log_level.upper()) in (logging.DEBUG, logging.INFO, 5)
    uvicorn.run(service, host=host, port=port, log_level=log_level, access_log=access_log)
