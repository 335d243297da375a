"""The ``slice_publications`` ledger: the state of each historical slice replacement per day.

States, in order: ``staged`` (the new version is staged; ClickHouse and the lake still hold
the previous one), ``clickhouse`` (ClickHouse holds the new version completely; the lake may
not yet), ``complete`` (both do). A failure leaves the last state reached, with ``error``.
Repairs end in ``rolled_back`` (a staged version removed again) or ``superseded`` (a newer
version of the day was published since). Rows are appended, never updated: the newest
``updated_at`` per (table, source, day, version) is the state (``ReplacingMergeTree``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pyarrow as pa

from quant_resources.warehouse import WarehouseResource

TABLE = "slice_publications"
STAGED, CLICKHOUSE, COMPLETE = "staged", "clickhouse", "complete"
ROLLED_BACK, SUPERSEDED = "rolled_back", "superseded"
PENDING = (STAGED, CLICKHOUSE)
_CLOCK = threading.Lock()
_last_us = 0


def _now_us() -> int:
    """Microseconds, strictly increasing within the process: two state changes of one
    publication never tie (the newest row is the state)."""
    global _last_us
    with _CLOCK:
        _last_us = max(time.time_ns() // 1000, _last_us + 1)
        return _last_us


def encode_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Bound query parameters as JSON, dates and times tagged so they come back typed."""

    def one(value: Any) -> Any:
        if isinstance(value, datetime):
            return {"datetime": value.isoformat()}
        if isinstance(value, date):
            return {"date": value.isoformat()}
        if isinstance(value, list | tuple):
            return [one(v) for v in value]
        return value

    return {k: one(v) for k, v in params.items()}


def decode_params(encoded: Mapping[str, Any]) -> dict[str, Any]:
    def one(value: Any) -> Any:
        if isinstance(value, dict) and "datetime" in value:
            return datetime.fromisoformat(value["datetime"])
        if isinstance(value, dict) and "date" in value:
            return date.fromisoformat(value["date"])
        if isinstance(value, list):
            return [one(v) for v in value]
        return value

    return {k: one(v) for k, v in encoded.items()}


@dataclass(frozen=True)
class Pending:
    """A publication left in ``staged`` or ``clickhouse``."""

    day: date
    version: int
    state: str
    rows: int
    error: str
    slice: dict[str, Any]


class PublicationLedger:
    def __init__(self, warehouse: WarehouseResource, table: str, source: str) -> None:
        self.warehouse = warehouse
        self.table = table
        self.source = source

    def record(
        self,
        version: int,
        state: str,
        rows: Mapping[date, int],
        *,
        holder: str,
        slice_json: str,
        error: str = "",
    ) -> None:
        """One row per day of the publication, all in one insert."""
        days = sorted(rows)
        stamp = _now_us()
        self.warehouse.insert(
            TABLE,
            pa.table(
                {
                    "table_name": [self.table] * len(days),
                    "source": [self.source] * len(days),
                    "session_date": pa.array(days, pa.date32()),
                    "version": pa.array([version] * len(days), pa.uint64()),
                    "state": [state] * len(days),
                    "rows": pa.array([rows[d] for d in days], pa.uint64()),
                    "holder": [holder] * len(days),
                    "error": [error[:2000]] * len(days),
                    "slice": [slice_json] * len(days),
                    "updated_at": pa.array([stamp] * len(days), pa.timestamp("us", "UTC")),
                }
            ),
        )

    def pending(self) -> list[Pending]:
        rows = self.warehouse.query_rows(
            f"SELECT session_date, version, state, rows, error, slice FROM {TABLE} FINAL "
            "WHERE table_name = {t:String} AND source = {s:String} AND state IN {p:Array(String)} "
            "ORDER BY version, session_date",
            {"t": self.table, "s": self.source, "p": list(PENDING)},
        )
        return [Pending(d, v, st, n, e, json.loads(sl)) for d, v, st, n, e, sl in rows]

    def newest_published(self, day: date, part: str) -> int:
        """The newest version of ``day`` (and lake part) that reached ClickHouse; 0 if none."""
        rows = self.warehouse.query_rows(
            f"SELECT version, slice FROM {TABLE} FINAL WHERE table_name = {{t:String}} "
            "AND source = {s:String} AND session_date = {d:Date} "
            "AND state IN ('clickhouse', 'complete')",
            {"t": self.table, "s": self.source, "d": day},
        )
        return max((v for v, sl in rows if json.loads(sl).get("part") == part), default=0)
