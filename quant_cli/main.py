"""Entry point of the ``quant`` console script."""

from __future__ import annotations

import typer

from quant_cli import backfill, dev, live, nats, replay, schemas, serve, sim, warehouse

app = typer.Typer(
    name="quant",
    help="quant: market-data platform (historical bars, options, live ingestion, replay).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(schemas.app, name="schemas")
app.add_typer(warehouse.app, name="warehouse")
app.add_typer(sim.app, name="sim")
app.add_typer(replay.app, name="replay")
app.add_typer(nats.app, name="nats")
app.add_typer(serve.app, name="serve")
app.command("backfill")(backfill.backfill)
app.command("live", epilog=live.ENVIRONMENT)(live.live)
app.command("dev")(dev.dev)


@app.command()
def version() -> None:
    """Print the software and contract versions."""
    from quant_core import __version__
    from quant_core.contracts import SCHEMA_VERSION

    typer.echo(f"quant {__version__} (contracts {SCHEMA_VERSION})")


if __name__ == "__main__":
    app()
