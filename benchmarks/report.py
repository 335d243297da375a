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


def render_markdown(sections: list[dict], meta: dict) -> str:
    """One table per suite, dated with that suite's own run (a partial run keeps the others)."""
    lines = [
        "# Benchmark results",
        "",
        f"Python {meta['python']} · {meta['machine']} · {meta['cpus']} CPUs. Each suite ran in its "
        "own process; the ratio compares with a peer measured in the same run.",
    ]
    for section in sections:
        lines += ["", f"## {section['suite']} ({section['when']})", ""]
        if section.get("error"):
            lines.append(f"**Failed, no figures:** {section['error']}")
            continue
        lines += [
            "| figure | ours | peer | peer value | ratio | goal |",
            "|---|---:|---|---:|---:|---|",
        ]
        for f in section["figures"]:
            lines.append(
                f"| {f['name']} | {f['ours']:,.0f} {f['unit']} | {f['peer_name']} "
                f"| {f['peer']:,.0f} {f['unit']} | {f['ratio']:.2f}x | {f['goal']} |"
            )
    return "\n".join(lines) + "\n"
