"""``quant schemas``: export the locked JSON Schema (and the data service's OpenAPI document)
and check examples against it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(
    help="JSON Schema of the v1 contracts and OpenAPI of the data service.", no_args_is_help=True
)


@app.command("export")
def export(
    directory: Path = typer.Argument(..., help="Folder to write the schema files into."),
) -> None:
    """Write one JSON Schema per model plus the bundle quant.v1.schema.json."""
    from quant_core.contracts import schema_files

    directory.mkdir(parents=True, exist_ok=True)
    files = schema_files()
    for name, text in files.items():
        target = directory / name
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(target)
    typer.echo(f"wrote {len(files)} schema files to {directory}")


@app.command("diff")
def diff(
    directory: Path = typer.Argument(Path("schemas/v1"), help="Committed schema folder."),
) -> None:
    """Exit 1 when DIRECTORY differs from what the current models export."""
    from quant_core.contracts import schema_files

    expected = schema_files()
    present = {p.name for p in directory.glob("*.json")} if directory.is_dir() else set()
    stale = sorted(
        n for n, t in expected.items() if n not in present or (directory / n).read_text() != t
    )
    extra = sorted(present - expected.keys())
    for name in stale:
        typer.echo(f"out of date: {directory / name}", err=True)
    for name in extra:
        typer.echo(f"not a current model: {directory / name}", err=True)
    if stale or extra:
        typer.echo("run: quant schemas export schemas/v1", err=True)
        raise typer.Exit(1)
    typer.echo(f"{directory} matches the models ({len(expected)} files)")


@app.command("check")
def check(directory: Path = typer.Argument(Path("schemas/v1"))) -> None:
    """Validate an example of every contract: model round trip and JSON Schema of DIRECTORY."""
    import jsonschema

    from quant_core.contracts.examples import examples

    for example in examples():
        model = type(example)
        text = example.model_dump_json()
        again = model.model_validate_json(text)
        if again != example:
            typer.echo(f"{model.__name__}: round trip changed the value", err=True)
            raise typer.Exit(1)
        schema = json.loads((directory / f"{model.__name__}.schema.json").read_text())
        jsonschema.validate(json.loads(text), schema)
        typer.echo(f"ok  {model.__name__:<13} {text[:88]}...")


@app.command("openapi")
def openapi(
    target: Path = typer.Argument(
        Path("schemas/openapi/quant-api.v1.json"), help="File to write the document into."
    ),
    check: bool = typer.Option(False, "--check", help="Exit 1 when TARGET differs; write nothing."),
) -> None:
    """Write (or --check) the OpenAPI document of the data service (`quant serve api`)."""
    from quant_api.openapi import openapi_text

    text = openapi_text()
    if check:
        if not target.is_file() or target.read_text() != text:
            typer.echo(f"out of date: {target}; run: quant schemas openapi {target}", err=True)
            raise typer.Exit(1)
        typer.echo(f"{target} matches the service")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(target)
    typer.echo(f"wrote {target}")
