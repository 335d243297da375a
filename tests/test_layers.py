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


SETTINGS = ROOT / "quant_resources" / "settings.py"


def environment_reads(path: Path) -> list[int]:
    """Lines that read a variable: ``os.environ.get(...)``, ``os.environ[...]`` as a value,
    ``os.getenv(...)``, ``os.environ.setdefault(...)`` used as a value. Setting a variable
    for child processes (``os.environ[X] = ...``) and handing the whole environment to a child
    (``{**os.environ}``) are not reads of a variable."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def is_environ(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "environ"
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        )

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "getenv":
            lines.append(node.lineno)
        elif is_environ(node):
            parent = parents.get(node)
            if isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Load):
                lines.append(node.lineno)
            elif isinstance(parent, ast.Attribute) and parent.attr in ("get", "setdefault"):
                call = parents.get(parent)
                if parent.attr == "get" or not isinstance(parents.get(call), ast.Expr):
                    lines.append(node.lineno)
    return sorted(lines)


def test_environment_is_read_in_one_settings_module() -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{line}"
        for package in ALLOWED
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != SETTINGS
        for line in environment_reads(path)
    ]
    assert not offences, "read the variable through quant_resources.settings: " + ", ".join(
        offences
    )


def test_the_environment_rule_catches_reads(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import os\na = os.environ.get('A')\nb = os.environ['B']\nc = os.getenv('C')\n"
        "os.environ['D'] = '1'\nos.environ.setdefault('E', '1')\nf = {**os.environ}\n"
        "g = os.environ.setdefault('G', '1')\n"
    )
    assert environment_reads(module) == [2, 3, 4, 8]
