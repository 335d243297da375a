"""Per-minute operational metrics of the live pipeline (pure: the caller feeds the numbers)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

COUNTERS = (
    "messages",
    "bytes",
    "trades",
    "quotes",
    "bars",
    "rejects",
    "drops",
    "reconnects",
    "gaps_opened",
    "trades_repaired",
    "duplicates",
    "ids_absent",  # live3: missing trade ids REST lacks too (lost for good)
)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: the value was really observed)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass
class MinuteTelemetry:
    minute_ms: int
    counters: Counter = field(default_factory=Counter)
    lags_ms: list[float] = field(default_factory=list)
    gauges: dict[str, float] = field(default_factory=dict)

    def rows(self, source: str, component: str, session_id: str) -> list[tuple]:
        """(source, symbol, component, session_id, ts_ms, metric, value) rows."""
        metrics = {name: float(self.counters.get(name, 0)) for name in COUNTERS}
        metrics["lag_p50_ms"] = percentile(self.lags_ms, 50)
        metrics["lag_p99_ms"] = percentile(self.lags_ms, 99)
        metrics.update(self.gauges)
        return [
            (source, "ALL", component, session_id, self.minute_ms, name, value)
            for name, value in sorted(metrics.items())
        ]


class TelemetryClock:
    """Rolls a :class:`MinuteTelemetry` per wall-clock minute; ``roll`` returns closed ones."""

    def __init__(self, now_ms: int) -> None:
        self.current = MinuteTelemetry(now_ms // 60_000 * 60_000)

    def roll(self, now_ms: int) -> list[MinuteTelemetry]:
        minute = now_ms // 60_000 * 60_000
        if minute == self.current.minute_ms:
            return []
        closed = [self.current]
        self.current = MinuteTelemetry(minute)
        return closed
