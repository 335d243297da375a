"""Run every benchmark and write benchmarks/results.json and benchmarks/results.md."""

from __future__ import annotations

import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import (
    bench_alpaca,
    bench_contracts,
    bench_decode,
    bench_live,
    bench_replay,
    bench_storage,
)
from benchmarks.report import Figure, render_markdown

SUITES = [bench_storage, bench_alpaca, bench_decode, bench_live, bench_replay, bench_contracts]
HERE = Path(__file__).parent


def main() -> None:
    figures: list[Figure] = []
    for suite in SUITES:
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
