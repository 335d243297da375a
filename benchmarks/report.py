"""A benchmark figure: our value against a named peer measured in the same run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Figure:
    name: str
    unit: str
    ours: float
    peer_name: str
    peer: float
    goal: str
    higher_is_better: bool = True

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.ours / self.peer if self.peer else float("inf")
        return self.peer / self.ours if self.ours else float("inf")

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": round(self.ratio, 3)}


def best_rate(work: Callable[[], int], repeat: int = 3) -> float:
    """Items per second of the fastest of ``repeat`` runs (the least disturbed by the machine)."""
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        items = work()
        best = max(best, items / (time.perf_counter() - start))
    return best


def render_markdown(figures: list[Figure], meta: dict) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"{meta['when']} · Python {meta['python']} · {meta['machine']} · {meta['cpus']} CPUs",
        "",
        "| figure | ours | peer | peer value | ratio | goal |",
        "|---|---:|---|---:|---:|---|",
    ]
    for f in figures:
        lines.append(
            f"| {f.name} | {f.ours:,.0f} {f.unit} | {f.peer_name} | {f.peer:,.0f} {f.unit} "
            f"| {f.ratio:.2f}x | {f.goal} |"
        )
    if meta.get("failed"):
        lines += ["", "## Suites that failed (no figures)", ""]
        lines += [f"- `{name}`: {error}" for name, error in meta["failed"].items()]
    return "\n".join(lines) + "\n"
