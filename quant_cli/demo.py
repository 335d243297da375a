"""``make demo``: the main job on embedded defaults, with no servers, keys or network.

Each step prints what it did; the demo grows with the platform (see docs/architecture.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from typer.testing import CliRunner

from quant_cli.main import app


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    if result.exit_code != 0:
        sys.stderr.write(result.output)
        raise SystemExit(f"quant {' '.join(args)} failed with exit code {result.exit_code}")
    return result.output


def main() -> None:
    home = Path(os.environ.get("QUANT_HOME", ".quant"))
    schema_dir = home / "schemas" / "v1"
    print(f"[1/2] exporting the v1 contract schemas to {schema_dir}")
    print(_run("schemas", "export", str(schema_dir)), end="")
    print("[2/2] validating an example of every contract against that schema")
    print(_run("schemas", "check", str(schema_dir)), end="")
    print(
        "\nNext: `make test` runs the whole suite; `make dev` opens the Dagster UI "
        "(DAGSTER_HOME=$QUANT_HOME/dagster)."
    )


if __name__ == "__main__":
    main()
