"""Run the benchmarks and write benchmarks/results.json and benchmarks/results.md.

``python -m benchmarks`` runs every suite; ``python -m benchmarks decode replay`` runs those and
keeps the other suites' figures from the last results, each section dated with its own run.
Every suite runs in its own process: chDB opens one database path per process, and one suite's
imports, threads and heap must not weigh on the next one's figures. A suite that fails is
reported by name with its error, and the others still run: one broken figure must not cost the
figures of a 15-minute run. The exit status is 1 when any failed.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.report import render_markdown

# Imported when they run, not here: worker processes started with "spawn" (the sharded
# replay's) re-import this module, and should not pay for every suite's imports.
SUITES = ["storage", "alpaca", "decode", "book", "live", "replay", "contracts", "archive", "api"]
HERE = Path(__file__).parent


def run_one(name: str, out: Path) -> int:
    """The child's side: run one suite and write its figures as JSON to ``out``."""
    suite = importlib.import_module(f"benchmarks.bench_{name}")
    out.write_text(json.dumps([f.as_dict() for f in suite.run()]))
    return 0


def run_suite(name: str) -> tuple[list[dict], str | None]:
    """Run one suite in a child process; its figures, or the error that stopped it."""
    with tempfile.TemporaryDirectory(prefix=f"quant-bench-{name}-") as tmp:
        out = Path(tmp) / "figures.json"
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks", "--one", name, str(out)],
            stderr=subprocess.PIPE,
            text=True,
        )
        if proc.returncode == 0 and out.exists():
            return json.loads(out.read_text()), None
        sys.stderr.write(proc.stderr)
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        return [], lines[-1] if lines else f"exit status {proc.returncode}"


def previous_sections() -> list[dict]:
    """The last results, as sections of one suite each (older files had one section)."""
    path = HERE / "results.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    if "sections" in data:
        return data["sections"]
    meta = data.get("meta", {})
    return [
        {
            "suite": ", ".join(meta.get("suites", [])) or "earlier run",
            "when": meta.get("when", "unknown"),
            "figures": data.get("figures", []),
            "error": None,
        }
    ]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        return run_one(argv[1], Path(argv[2]))
    unknown = sorted(set(argv) - set(SUITES))
    if unknown:
        print(f"unknown suite(s) {', '.join(unknown)}; known: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    chosen = [s for s in SUITES if not argv or s in argv]
    fresh: dict[str, dict] = {}
    for name in chosen:
        print(f"running benchmarks.bench_{name} ...", flush=True)
        try:
            figures, error = run_suite(name)
        except Exception as exc:  # reported by name below; the other suites still run
            traceback.print_exc()
            figures, error = [], f"{type(exc).__name__}: {exc}"
        when = datetime.now(UTC).isoformat(timespec="seconds")
        fresh[name] = {"suite": name, "when": when, "figures": figures, "error": error}
    # A partial run keeps the other suites' last figures; a suite run now replaces its own.
    kept = [s for s in previous_sections() if s["suite"] not in fresh and argv]
    sections = [fresh[name] for name in chosen] + kept
    meta = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    data = {"meta": meta, "sections": sections}
    (HERE / "results.json").write_text(json.dumps(data, indent=2) + "\n")
    table = render_markdown(sections, meta)
    (HERE / "results.md").write_text(table)
    print(table)
    return 1 if any(fresh[name]["error"] for name in chosen) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
