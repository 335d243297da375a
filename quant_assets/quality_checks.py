"""Asset-check results computed from what was stored, for bar and quote assets."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
import pyarrow as pa

from quant_core.calendar import TradingSession
from quant_core.quality import (
    Completeness,
    duplicate_findings,
    ohlc_findings,
    outside_session_findings,
    quote_findings,
    regular_completeness,
)
from quant_resources.settings import max_missing_ratio

# (check name, blocking): blocking checks stop downstream assets from using bad data.
BAR_CHECKS = [
    ("ohlc_valid", True),
    ("no_duplicates", True),
    ("inside_session", True),
    ("timestamps_utc", True),
    ("regular_minutes_complete", False),
]
QUOTE_CHECKS = [
    ("bid_le_ask_and_sizes", True),
    ("no_duplicates", True),
    ("timestamps_utc", True),
]


def _result(name: str, findings: list, **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=not findings,
        metadata={
            "findings": dg.MetadataValue.json([str(f) for f in findings[:20]]),
            "count": len(findings),
            **metadata,
        },
    )


def _utc(table: pa.Table, columns: tuple[str, ...]) -> list[str]:
    return [
        f"{c}: type {table.schema.field(c).type}"
        for c in columns
        if getattr(table.schema.field(c).type, "tz", None) not in ("UTC", "Etc/UTC")
    ]


def check_specs(asset: str, checks: list[tuple[str, bool]]) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=asset, blocking=blocking) for name, blocking in checks]


@dataclass(frozen=True)
class BarFindings:
    """What the bar rules found in one frame; pieces of a run are judged apart and joined."""

    ohlc: list
    duplicates: list
    outside: list
    completeness: list[Completeness] | None

    def __add__(self, other: BarFindings) -> BarFindings:
        completeness = (
            None
            if self.completeness is None or other.completeness is None
            else self.completeness + other.completeness
        )
        return BarFindings(
            self.ohlc + other.ohlc,
            self.duplicates + other.duplicates,
            self.outside + other.outside,
            completeness,
        )


def bar_findings(
    bars: pa.Table, sessions: list[TradingSession], symbols: list[str] | None
) -> BarFindings:
    by_day = {s.day: s for s in sessions}
    return BarFindings(
        ohlc=ohlc_findings(bars),
        duplicates=duplicate_findings(bars, ("source", "symbol", "ts")),
        outside=outside_session_findings(bars, by_day),
        completeness=None if symbols is None else regular_completeness(bars, by_day, symbols),
    )


def bar_check_results(
    stored: pa.Table,
    sessions: list[TradingSession],
    symbols: list[str] | None,
    found: BarFindings | None = None,
) -> list[dg.AssetCheckResult]:
    """Check results of ``stored``; ``found`` is what ``bar_findings`` already found in that
    very frame (judged piece by piece while it was being written), else it is judged here."""
    if found is None:
        found = bar_findings(stored, sessions, symbols)
    results = [
        _result("ohlc_valid", found.ohlc, rows=stored.num_rows),
        _result("no_duplicates", found.duplicates),
        _result("inside_session", found.outside),
        _result("timestamps_utc", _utc(stored, ("ts", "ts_close"))),
    ]
    if found.completeness is not None:
        report = found.completeness
        threshold = max_missing_ratio()
        worst = max((r.missing_ratio for r in report), default=0.0)
        results.append(
            dg.AssetCheckResult(
                check_name="regular_minutes_complete",
                passed=worst <= threshold,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "threshold": threshold,
                    "worst_missing_ratio": round(worst, 4),
                    "per_symbol": dg.MetadataValue.json(
                        [
                            {
                                "symbol": r.symbol,
                                "day": r.day.isoformat(),
                                "expected": r.expected,
                                "present": r.present,
                                "missing": r.missing,
                            }
                            for r in report
                        ]
                    ),
                },
            )
        )
    return results


def quote_check_results(stored: pa.Table) -> list[dg.AssetCheckResult]:
    return [
        _result("bid_le_ask_and_sizes", quote_findings(stored), rows=stored.num_rows),
        _result("no_duplicates", duplicate_findings(stored, ("source", "symbol", "snapshot_ts"))),
        _result("timestamps_utc", _utc(stored, ("ts", "snapshot_ts"))),
    ]
