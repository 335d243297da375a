"""The code location loads as Dagster would load it from workspace.yaml."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_workspace_names_the_code_location() -> None:
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    assert entry["python_module"] == {
        "module_name": "quant_definitions",
        "location_name": "quant",
    }


def test_definitions_load() -> None:
    from quant_definitions import defs

    assert isinstance(defs, dg.Definitions)
    defs.get_repository_def().load_all_definitions()
