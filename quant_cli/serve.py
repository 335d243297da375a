"""``quant serve``: the data service (FastAPI on uvicorn)."""

from __future__ import annotations

import ipaddress
import logging

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
) -> None:
    """The data service: /v1/bars, /v1/latest, /v1/options/chain, /v1/sessions, /v1/health.

    Tokens come from QUANT_API_TOKENS; without any, only a loopback address may be bound."""
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
    uvicorn.run(service, host=host, port=port, log_level=log_level)
