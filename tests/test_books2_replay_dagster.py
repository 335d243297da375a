"""The Dagster ``replay_verification`` compares ``book_updates`` too, every column (issue 16):
a stored row whose receive time ``ts_init`` differs from the one the session log recorded
turns ``book_snapshots_match_warehouse`` red, naming the row and the column. Same session and
set-up as ``test_bkernel_replay_books``."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from quant_core.book_tables import BOOK_UPDATES
from tests.test_bkernel_replay_books import setup, verify

__all__ = ["setup"]  # the fixture


def test_a_different_receive_time_in_book_updates_is_red(setup) -> None:
    warehouse, lake, session_id, snapshots = setup
    warehouse.insert("book_snapshots", snapshots)
    checks, _ = verify(warehouse, lake, session_id)
    assert checks["book_snapshots_match_warehouse"] is True
    stored = warehouse.query_arrow(
        f"SELECT {', '.join(BOOK_UPDATES.names)} FROM book_updates FINAL "
        "ORDER BY last_update_id, side, price LIMIT 1"
    )
    times = pc.cast(stored.column("ts_init"), pa.int64()).to_numpy().copy() + 1
    changed = stored.set_column(
        stored.schema.get_field_index("ts_init"),
        "ts_init",
        pa.array(times).cast(BOOK_UPDATES.field("ts_init").type),
    )
    warehouse.insert("book_updates", changed)  # replaces the row (same key), 1 ns later
    checks, meta = verify(warehouse, lake, session_id)
    assert checks["bars_match_warehouse"] is True
    assert checks["book_snapshots_match_warehouse"] is False
    found = meta["book_snapshots_match_warehouse"]["first_difference"]
    assert "book update" in found and "ts_init" in found, found
