"""Asset-check results computed from what was stored, for bar and quote assets, one
evaluation per partition (a backfill run of many sessions judges each session apart), with a
description on every check and the findings as a table drawn in place."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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

# What each check asserts, shown on the check's page (the UI says "No description" otherwise).
DESCRIPTIONS = {
    "ohlc_valid": "Every bar has high >= max(open, close), low <= min(open, close), a positive "
    "low, a non-negative volume and no nulls.",
    "no_duplicates": "No two rows share their key (source, symbol and time).",
    "inside_session": "Every bar lies inside its NYSE session, pre-market to post-market close.",
    "timestamps_utc": "Every timestamp column is UTC-aware.",
    "regular_minutes_complete": "Each symbol has every regular-session minute, up to "
    "QUANT_MAX_MISSING_RATIO missing (lists the missing minutes).",
    "bid_le_ask_and_sizes": "Every quote has bid <= ask and non-negative sizes.",
    "agrees_with_1m": "The stored daily bars equal the daily bars recomputed from the stored "
    "regular-session 1-minute bars.",
}
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
FINDING_COLUMNS = ("rule", "symbol", "ts", "detail")


TABLE_ROWS = 20  # rows a check's table shows; its "count" (or the checked data) has them all


def findings_table(findings: list) -> dg.MetadataValue:
    """Findings (``quant_core.quality.Finding`` or plain text) as a table, "no findings" as
    text."""
    if not findings:
        return dg.MetadataValue.text("no findings")
    if all(hasattr(f, "rule") for f in findings):
        return check_table([{c: getattr(f, c) for c in FINDING_COLUMNS} for f in findings])
    return check_table([{"finding": str(f)} for f in findings])


def check_table(
    rows: list[dict], shown: int = TABLE_ROWS, total: int | None = None
) -> dg.MetadataValue:
    """Rows (same keys; str or int values) as a Dagster table value of at most ``shown`` rows
    and a last one counting the rest (of ``total`` when the caller passes only the first rows).
    ui3: a table, not markdown: Dagster 1.13's check pages
    draw a table value in place but show markdown only behind "[Show Markdown]" (their
    ``MetadataEntries`` passes no ``expandSmallValues``; see docs/architecture.md)."""
    columns = list(rows[0])
    records = [
        dg.TableRecord({c: v if isinstance(v, int) else str(v) for c, v in row.items()})
        for row in rows[:shown]
    ]
    total = len(rows) if total is None else total
    if total > len(records):
        more = {c: None for c in columns}  # Dagster wants the same fields in every record
        records.append(dg.TableRecord({**more, columns[-1]: f"… {total - len(records)} more rows"}))
    types = {c: "int" if isinstance(rows[0][c], int) else "string" for c in columns}
    return dg.MetadataValue.table(
        records=records,
        schema=dg.TableSchema(columns=[dg.TableColumn(c, types[c]) for c in columns]),
    )


def _result(name: str, findings: list, **metadata) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        passed=not findings,
        description=DESCRIPTIONS.get(name),
        metadata={"findings": findings_table(findings), "count": len(findings), **metadata},
    )


def _utc(table: pa.Table, columns: tuple[str, ...]) -> list[str]:
    return [
        f"{c}: type {table.schema.field(c).type}"
        for c in columns
        if getattr(table.schema.field(c).type, "tz", None) not in ("UTC", "Etc/UTC")
    ]


def check_specs(
    asset: str,
    checks: list[tuple[str, bool]],
    partitions_def: dg.PartitionsDefinition | None = None,
) -> list[dg.AssetCheckSpec]:
    """Checks described from DESCRIPTIONS (tests/test_historical.py holds every check of the
    code location to having a description); with ``partitions_def``, one result per
    partition (see ``partition_check_events``)."""
    return [
        dg.AssetCheckSpec(
            name,
            asset=asset,
            blocking=blocking,
            description=DESCRIPTIONS.get(name),
            partitions_def=partitions_def,
        )
        for name, blocking in checks
    ]


def partition_check_events(
    context: dg.AssetExecutionContext, by_partition: Mapping[str, list[dg.AssetCheckResult]]
) -> Iterator[dg.Output | dg.AssetCheckEvaluation]:
    """Yield after the asset's MaterializeResult: each selected check's (empty) output, then
    every result as an evaluation of its own partition. An ``AssetCheckResult`` in a run of a
    partition range has no partition ("Partition —" in the UI); an evaluation names it. A
    failed blocking evaluation still fails the step (Dagster collects them)."""
    selected = context.assets_def.check_specs_by_output_name
    for output_name in selected:
        yield dg.Output(None, output_name=output_name)
    specs = {spec.name: spec for spec in selected.values()}
    for partition, results in by_partition.items():
        for result in results:
            spec = specs.get(result.check_name)
            if spec is None:  # not selected in this run
                continue
            yield dg.AssetCheckEvaluation(
                asset_key=spec.asset_key,
                check_name=spec.name,
                passed=result.passed,
                metadata=result.metadata,
                severity=result.severity,
                description=result.description or spec.description,
                blocking=spec.blocking,
                partition=partition,
            )


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
        rows = [
            {
                "symbol": r.symbol,
                "day": r.day,
                "expected": r.expected,
                "present": r.present,
                "missing": ", ".join(r.missing[:4]) + (" …" if len(r.missing) > 4 else ""),
            }
            for r in sorted(report, key=lambda r: r.missing_ratio, reverse=True)
        ]
        results.append(
            dg.AssetCheckResult(
                check_name="regular_minutes_complete",
                passed=worst <= threshold,
                severity=dg.AssetCheckSeverity.ERROR,
                description=DESCRIPTIONS["regular_minutes_complete"],
                metadata={
                    "threshold": threshold,
                    "worst_missing_ratio": round(worst, 4),
                    "per_symbol": check_table(rows) if rows else "none",
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
