"""Compare a replayed session with what the warehouse holds for it: its bars and, for a session
with depth, its book snapshots and book updates (every column, the receive time included).
``compare_with_warehouse`` is the one comparison the CLI (``quant replay verify
--against-warehouse``) and the Dagster ``replay_verification`` asset both run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from quant_core.book_tables import (
    BOOK_SNAPSHOTS,
    BOOK_UPDATES,
    compare_book_snapshots,
    compare_book_updates,
)
from quant_core.replay import compare_bars
from quant_core.tables import BARS_1M

if TYPE_CHECKING:
    from quant_core.replay import ReplayResult


def warehouse_bars(warehouse, replayed: pa.Table, source: str = "binance") -> pa.Table:
    """ClickHouse's bars (final versions) for the symbols and minutes of ``replayed``."""
    if replayed.num_rows == 0:
        return BARS_1M.empty_table()
    lo, hi = pc.min_max(replayed.column("ts")).values()
    columns = ", ".join(f.name for f in BARS_1M)
    return warehouse.query_arrow(
        f"SELECT {columns} FROM bars_1m FINAL WHERE source = {{src:String}} "
        "AND interval = '1m' AND symbol IN {syms:Array(String)} "
        "AND ts BETWEEN {lo:DateTime64(3, 'UTC')} AND {hi:DateTime64(3, 'UTC')} "
        "ORDER BY symbol, ts",
        {
            "src": source,
            "syms": pc.unique(replayed.column("symbol")).to_pylist(),
            "lo": lo.as_py(),
            "hi": hi.as_py(),
        },
    )


def diff_against_warehouse(warehouse, replayed: pa.Table, stopped: bool = True) -> str | None:
    """The first bar where the replay and ClickHouse disagree, or None.

    ``stopped`` False: the session ended without a clean stop (a recovered crash). Its replay
    holds what the live process had made final when it died; a minute it still held (a gap
    open, or the minute not over) is not among its bars, and the next session may since have
    written it to ClickHouse. Such a bar is not a disagreement; every bar of the replay must
    still be in ClickHouse, equal."""
    stored = warehouse_bars(warehouse, replayed)
    if not stopped and stored.num_rows:
        keys = pc.binary_join_element_wise(
            stored.column("symbol"), pc.cast(stored.column("ts"), pa.string()), "|"
        )
        mine = pc.binary_join_element_wise(
            replayed.column("symbol"), pc.cast(replayed.column("ts"), pa.string()), "|"
        )
        stored = stored.filter(pc.is_in(keys, value_set=mine))
    return compare_bars(replayed, stored)


def warehouse_book_rows(warehouse, replayed: pa.Table, table: str) -> pa.Table:
    """ClickHouse's ``book_snapshots`` (distinct rows) or ``book_updates`` (one row per key,
    ``FINAL``) for the source, symbols and exchange time span of ``replayed``."""
    shape, select = {
        "book_snapshots": (BOOK_SNAPSHOTS, "SELECT DISTINCT {} FROM book_snapshots"),
        "book_updates": (BOOK_UPDATES, "SELECT {} FROM book_updates FINAL"),
    }[table]
    if replayed.num_rows == 0:
        return shape.empty_table()
    lo, hi = pc.min_max(replayed.column("ts_event")).values()
    return warehouse.query_arrow(
        select.format(", ".join(shape.names))
        + " WHERE source = {src:String} AND symbol IN {syms:Array(String)} "
        "AND ts_event BETWEEN {lo:DateTime64(3, 'UTC')} AND {hi:DateTime64(3, 'UTC')}",
        {
            "src": replayed.column("source")[0].as_py(),
            "syms": pc.unique(replayed.column("symbol")).to_pylist(),
            "lo": lo.as_py(),
            "hi": hi.as_py(),
        },
    )


def books_against_warehouse(warehouse, replayed: pa.Table) -> str | None:
    """The first book snapshot where the replay and ClickHouse disagree, or None."""
    return compare_book_snapshots(
        replayed, warehouse_book_rows(warehouse, replayed, "book_snapshots")
    )


def book_updates_against_warehouse(
    warehouse, replayed: pa.Table, stopped: bool = True
) -> str | None:
    """The first book update where the replay and ClickHouse disagree, or None. A session
    without a clean stop (``stopped`` False) may have logged rows its process did not store
    before it died: each stored row must still equal the replay's."""
    stored = warehouse_book_rows(warehouse, replayed, "book_updates")
    return compare_book_updates(replayed, stored, subset=not stopped)


@dataclass(frozen=True)
class WarehouseComparison:
    """The first difference of each kind (None: identical). ``books`` is None too for a session
    without depth (``has_books`` False: nothing to compare)."""

    bars: str | None
    books: str | None
    has_books: bool
    book_updates: str | None = None

    def problems(self) -> list[str]:
        found = []
        if self.bars:
            found.append(f"bars differ from ClickHouse: {self.bars}")
        if self.books:
            found.append(f"book snapshots differ from ClickHouse: {self.books}")
        if self.book_updates:
            found.append(f"book updates differ from ClickHouse: {self.book_updates}")
        return found


def compare_with_warehouse(warehouse, result: ReplayResult) -> WarehouseComparison:
    """A replayed session (``quant_core.replay.replay``) against ClickHouse: bars (a crashed
    session's held minutes excepted, see ``diff_against_warehouse``), book snapshots and book
    updates."""
    stopped = result.summary["stop_exchange_ms"] is not None
    bars = diff_against_warehouse(warehouse, result.bars, stopped)
    snapshots = result.book_snapshots
    if snapshots is None:
        return WarehouseComparison(bars, None, False)
    updates = book_updates_against_warehouse(warehouse, result.book_updates, stopped)
    return WarehouseComparison(bars, books_against_warehouse(warehouse, snapshots), True, updates)
