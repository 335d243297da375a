"""Run every benchmark and write benchmarks/results.json and benchmarks/results.md."""

from __future__ import annotations

import importlib
import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.report import Figure, render_markdown

# Imported when they run, not here: worker processes started with "spawn" (the sharded
# replay's) re-import this module, and should not pay for every suite's imports.
SUITES = ["storage", "alpaca", "decode", "book", "live", "replay", "contracts", "archive", "api"]
HERE = Path(__file__).parent


def main() -> None:
    figures: list[Figure] = []
    for name in SUITES:
        suite = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"running {suite.__name__} ...", flush=True)
        figures.extend(suite.run())
    meta = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
    }
    (HERE / "results.json").write_text(
        json.dumps({"meta": meta, "figures": [f.as_dict() for f in figures]}, indent=2) + "\n"
    )
    table = render_markdown(figures, meta)
    (HERE / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
