"""The committed JSON Schema in schemas/v1 is exactly what the models export: a model change
without ``quant schemas export schemas/v1`` fails here, so schema churn shows up in review. The
same holds for the data service's OpenAPI document in schemas/openapi (``make schemas``)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from quant_cli.main import app
from quant_core.contracts import MODELS, schema_files

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_committed_schema_matches_models() -> None:
    committed = {p.name: p.read_text() for p in (ROOT / "schemas" / "v1").glob("*.json")}
    expected = schema_files()
    assert sorted(committed) == sorted(expected), "schema files added/removed: re-export"
    for name, text in expected.items():
        assert committed[name] == text, (
            f"schemas/v1/{name} is stale: quant schemas export schemas/v1"
        )


def test_export_writes_bundle_and_one_file_per_model(tmp_path) -> None:
    result = runner.invoke(app, ["schemas", "export", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    names = {p.name for p in (tmp_path / "x").iterdir()}
    assert names == {f"{m.__name__}.schema.json" for m in MODELS} | {"quant.v1.schema.json"}
    bundle = json.loads((tmp_path / "x" / "quant.v1.schema.json").read_text())
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in bundle["anyOf"]} == {
        m.__name__ for m in MODELS
    }


def test_diff_detects_a_changed_model(tmp_path, monkeypatch) -> None:
    runner.invoke(app, ["schemas", "export", str(tmp_path)])
    assert runner.invoke(app, ["schemas", "diff", str(tmp_path)]).exit_code == 0
    import quant_core.contracts as contracts

    changed = dict(schema_files())
    changed["Bar.schema.json"] = changed["Bar.schema.json"].replace('"open"', '"opening"')
    monkeypatch.setattr(contracts, "schema_files", lambda: changed)
    result = runner.invoke(app, ["schemas", "diff", str(tmp_path)])
    assert result.exit_code == 1
    assert "Bar.schema.json" in result.output


def test_check_validates_examples() -> None:
    result = runner.invoke(app, ["schemas", "check", str(ROOT / "schemas" / "v1")])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok  ") == len(MODELS)


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("schemas", "version"):
        assert command in result.output


def test_committed_openapi_matches_the_service() -> None:
    from quant_api.openapi import LOCKED, openapi_text

    committed = (ROOT / LOCKED).read_text()
    assert committed == openapi_text(), f"{LOCKED} is stale: make schemas"


def test_openapi_check_detects_drift(tmp_path) -> None:
    target = tmp_path / "api.json"
    assert runner.invoke(app, ["schemas", "openapi", str(target)]).exit_code == 0
    assert runner.invoke(app, ["schemas", "openapi", str(target), "--check"]).exit_code == 0
    target.write_text(target.read_text().replace('"/v1/bars"', '"/v1/candles"'))
    result = runner.invoke(app, ["schemas", "openapi", str(target), "--check"])
    assert result.exit_code == 1
    assert "out of date" in result.output
