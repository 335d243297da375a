"""Asset-check results computed from what was stored, for bar and quote assets."""

from __future__ import annotations

import os

import dagster as dg
import pyarrow as pa

from quant_core.calendar import TradingSession
from quant_core.quality import (
    duplicate_findings,
    ohlc_findings,
    outside_session_findings,
    quote_findings,
    regular_completeness,
)

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


def max_missing_ratio() -> float:
    return float(os.environ.get("QUANT_MAX_MISSING_RATIO") or 0.05)


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


def bar_check_results(
    stored: pa.Table, sessions: list[TradingSession], symbols: list[str] | None
) -> list[dg.AssetCheckResult]:
    by_day = {s.day: s for s in sessions}
    results = [
        _result("ohlc_valid", ohlc_findings(stored), rows=stored.num_rows),
        _result("no_duplicates", duplicate_findings(stored, ("source", "symbol", "ts"))),
        _result("inside_session", outside_session_findings(stored, by_day)),
        _result("timestamps_utc", _utc(stored, ("ts", "ts_close"))),
    ]
    if symbols is not None:
        report = regular_completeness(stored, by_day, symbols)
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
