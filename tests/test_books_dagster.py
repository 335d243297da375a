"""``live_book_snapshots`` and its checks: in the code location, and against stored rows on the
real ClickHouse endpoint (good rows pass; a crossed snapshot, one the stored updates do not
explain and a top that differs from the book ticker at the same update id each fail, named in
the findings tables). The migration's columns are the issue's."""

from __future__ import annotations

import numpy as np
import pytest

from quant_assets.books import (
    book_snapshots_explained_by_updates,
    book_snapshots_not_crossed,
    book_top_agrees_with_book_ticker,
)
from quant_core.book_audit import unexplained
from quant_core.book_tables import book_snapshots_table, book_updates_table
from quant_core.depth_sync import BookSnapshot
from quant_resources.live.sinks import quote_columns_table
from tests.live_helpers import drop, fresh_warehouse

T0 = 1_700_000_000_000
P = 10**8
SRC = "binance"


def snap(ts: int, update_id: int, synced_from: int, bid: int, ask: int) -> BookSnapshot:
    return BookSnapshot(
        "BTCUSDT", ts, update_id, synced_from, (bid * P,), (P,), (ask * P,), (2 * P,), True, True, 0
    )


def updates(diffs: list[tuple[int, int]]):
    n = len(diffs)
    cols = {
        "symbol": np.zeros(n, dtype=np.int32),
        "first_update_id": np.array([d[0] for d in diffs], dtype=np.int64),
        "last_update_id": np.array([d[1] for d in diffs], dtype=np.int64),
        "ts_event": np.full(n, T0, dtype=np.int64),
        "side": np.zeros(n, dtype=np.int8),
        "price": np.full(n, 10 * P, dtype=np.int64),
        "qty": np.full(n, P, dtype=np.int64),
    }
    return book_updates_table(["BTCUSDT"], cols, np.full(n, T0 * 10**6), "binance")


def quote(update_id: int, bid: int, ask: int):
    ints = {
        "update_id": np.array([update_id]),
        "bid_price": np.array([bid * P]),
        "bid_qty": np.array([P]),
        "ask_price": np.array([ask * P]),
        "ask_qty": np.array([2 * P]),
        "ts": np.array([T0]),
        "ts_init": np.array([T0 * 10**6]),
    }
    return quote_columns_table(["BTCUSDT"], ints, "s")


def test_chain_rule() -> None:
    diffs = [(99, 101), (102, 104), (106, 107)]
    assert unexplained(diffs, 100, 104) is None
    assert unexplained(diffs, 100, 100) is None
    assert "covers 105..105" in unexplained(diffs, 100, 107)
    assert "starts at 102" in unexplained(diffs[1:], 100, 104)
    assert "end at 104" in unexplained(diffs, 100, 105)


def test_definitions_show_the_asset_and_its_checks() -> None:
    from quant_definitions import defs

    graph = defs.resolve_asset_graph()
    key = next(k for k in graph.get_all_asset_keys() if k.path == ["live_book_snapshots"])
    assert graph.get(key).group_name == "live"
    names = {c.name for c in graph.get_check_keys_for_assets([key])}
    assert names == {
        "book_snapshots_not_crossed",
        "book_snapshots_explained_by_updates",
        "book_top_agrees_with_book_ticker",
    }


@pytest.fixture
def warehouse(clickhouse_url):
    wh = fresh_warehouse(clickhouse_url)
    yield wh
    drop(wh)


def test_migration_columns_are_the_issues(warehouse) -> None:
    assert list(warehouse.table_columns("book_updates")) == [
        "source", "symbol", "first_update_id", "last_update_id", "ts_event", "ts_init",
        "side", "price", "qty",
    ]  # fmt: skip
    assert list(warehouse.table_columns("book_snapshots")) == [
        "source", "symbol", "ts_event", "update_id", "bid_prices", "bid_qtys", "ask_prices",
        "ask_qtys", "synced_from", "bids_complete", "asks_complete",  # bkernel: migration 0011
    ]  # fmt: skip
    # Re-inserting the same rows (a retried batch) leaves one copy.
    for _ in range(2):
        warehouse.insert(
            "book_snapshots", book_snapshots_table([snap(T0, 104, 100, 10, 11)], "binance")
        )
    assert warehouse.scalar("SELECT count() FROM book_snapshots FINAL") == 1


def test_checks_pass_on_sound_rows_and_name_each_fault(warehouse) -> None:
    warehouse.insert("book_updates", updates([(99, 101), (102, 104)]))
    warehouse.insert(
        "book_snapshots", book_snapshots_table([snap(T0, 104, 100, 10, 11)], "binance")
    )
    warehouse.insert("quotes", quote(104, 10, 11))
    checks = (
        book_snapshots_not_crossed,
        book_snapshots_explained_by_updates,
        book_top_agrees_with_book_ticker,
    )
    for check in checks:
        result = check(warehouse=warehouse)
        assert result.passed, (check.name, result.metadata)
    assert (
        book_top_agrees_with_book_ticker(warehouse=warehouse)
        .metadata["coinciding_update_ids"]
        .value
        == 1
    )

    bad = [snap(T0 + 1000, 101, 100, 12, 11), snap(T0 + 2000, 110, 100, 10, 11)]
    warehouse.insert("book_snapshots", book_snapshots_table(bad, "binance"))
    warehouse.insert("quotes", quote(101, 9, 11))
    crossed = book_snapshots_not_crossed(warehouse=warehouse)
    (row,) = cells(crossed.metadata["findings"])
    assert not crossed.passed and row["symbol"] == "BTCUSDT" and row["update_id"] == 101
    chain = book_snapshots_explained_by_updates(warehouse=warehouse)
    assert not chain.passed and chain.metadata["unexplained"].value == 1
    (row,) = cells(chain.metadata["findings"])
    assert row["update_id"] == 110 and "no stored diff covers" not in row["why"]
    top = book_top_agrees_with_book_ticker(warehouse=warehouse)
    assert not top.passed and top.metadata["disagreeing"].value == 1
    (row,) = cells(top.metadata["findings"])
    assert row["update_id"] == 101 and row["book"] != row["book_ticker"]


def cells(findings) -> list[dict]:
    """A check's findings table as rows (the UI draws it in place)."""
    return [record.data for record in findings.records]
