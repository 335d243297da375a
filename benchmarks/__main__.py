"""Run the benchmarks and write benchmarks/results.json and benchmarks/results.md.

``python -m benchmarks`` runs every suite; ``python -m benchmarks decode replay`` runs those.
A suite that fails is reported by name with its error, and the others still run: one broken
figure must not cost the figures of a 15-minute run. The exit status is 1 when any failed.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.report import Figure, render_markdown

# Imported when they run, not here: worker processes started with "spawn" (the sharded
# replay's) re-import this module, and should not pay for every suite's imports.
SUITES = ["storage", "alpaca", "decode", "book", "live", "replay", "contracts", "archive", "api"]
HERE = Path(__file__).parent


def main(argv: list[str]) -> int:
    unknown = sorted(set(argv) - set(SUITES))
    if unknown:
        print(f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    figures: list[Figure] = []
    failed: dict[str, str] = {}
    for name in [s for s in SUITES if not argv or s in argv]:
        print(f"running benchmarks.bench_{name} ...", flush=True)
        try:
            suite = importlib.import_module(f"benchmarks.bench_{name}")
            figures.extend(suite.run())
        except Exception as exc:  # reported by name below; the other suites still run
            traceback.print_exc()
            failed[name] = f"{type(exc).__name__}: {exc}"
    meta = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": __import__("os").cpu_count(),
        "suites": [s for s in SUITES if not argv or s in argv],
        "failed": failed,
    }
    (HERE / "results.json").write_text(
        json.dumps({"meta": meta, "figures": [f.as_dict() for f in figures]}, indent=2) + "\n"
    )
    table = render_markdown(figures, meta)
    (HERE / "results.md").write_text(table)
    print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
