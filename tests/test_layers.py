"""The package layers of docs/architecture.md, read from the import statements themselves.

``quant_core`` is pure; the product (``quant_core``, ``quant_resources``, ``quant_assets``,
``sensors``, ``quant_definitions``) never imports the development tooling (``quant_dev``);
``sensors`` imports ``quant_assets``, never the reverse; the data service (``quant_api``) uses
``quant_core`` and ``quant_resources`` only; no package imports the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package -> the first-party packages it may import (itself always allowed)
ALLOWED = {
    "quant_core": set(),
    "quant_resources": {"quant_core"},
    "quant_assets": {"quant_core", "quant_resources"},
    "sensors": {"quant_core", "quant_resources", "quant_assets"},
    "quant_definitions": {"quant_core", "quant_resources", "quant_assets", "sensors"},
    "quant_dev": {"quant_core", "quant_resources"},
    "quant_api": {"quant_core", "quant_resources"},
    "quant_cli": {
        "quant_api",
        "quant_core",
        "quant_resources",
        "quant_assets",
        "sensors",
        "quant_definitions",
        "quant_dev",
    },
}
FIRST_PARTY = set(ALLOWED) | {"tests", "benchmarks"}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in FIRST_PARTY:
                found.add((top, node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_the_layers_below(package: str) -> None:
    offences = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for top, line in imported_packages(path):
            if top != package and top not in ALLOWED[package]:
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    assert not offences, "\n".join(offences)


def test_the_rule_catches_an_offence(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import quant_dev.binance_sim\nfrom sensors.live import x\n")
    assert {top for top, _ in imported_packages(module)} == {"quant_dev", "sensors"}
