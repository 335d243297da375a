"""``book_snapshots`` say when levels beyond the REST snapshot are unknown (issue 16, migration
0011): a book built from a snapshot of ``limit`` levels knows nothing of prices past its deepest
one until a diff changes them, so a stored snapshot whose levels reach past that range has
``bids_complete`` / ``asks_complete`` false - computed by the kernel, so live and replay store
the same - and the flags survive a round trip through ClickHouse."""

from __future__ import annotations

import numpy as np
import orjson

from quant_core.book_tables import book_snapshots_table
from quant_core.kernel import IngestKernel

T0 = 1_700_000_000_000


def diff(first: int, last: int, ts: int, bids=(), asks=()) -> bytes:
    data = {
        "e": "depthUpdate", "E": ts, "s": "BTCUSDT", "U": first, "u": last,
        "b": [[f"{p}.00000000", q] for p, q in bids], "a": [[f"{p}.00000000", q] for p, q in asks],
    }  # fmt: skip
    return orjson.dumps({"stream": "btcusdt@depth@100ms", "data": data})


def snapshots_of_a_book_losing_its_top() -> list:
    kernel = IngestKernel(["BTCUSDT"], ["depth"])
    kernel.conn({"event": "books", "depth": 5, "interval_ms": 200, "limit": 10})
    out = kernel.frames([diff(100, 100, T0, bids=[(90, "1")])], np.zeros(1, np.int64))
    (request,) = out.books.output.requests
    # A REST snapshot of exactly ``limit`` levels a side: bids 100..91, asks 101..110.
    body = orjson.dumps(
        {
            "lastUpdateId": 100,
            "bids": [[f"{p}.0", "1.0"] for p in range(100, 90, -1)],
            "asks": [[f"{p}.0", "1.0"] for p in range(101, 111)],
        }
    )
    snaps = list(kernel.rest("/api/v3/depth", body, "BTCUSDT", 0, None, request.request_id)
                 .books.output.snapshots)  # fmt: skip
    # The six best bids go and a bid at 80 appears: beyond the snapshot's range (it ended at
    # 91), so whether the exchange holds bids between 91 and 80 is unknown.
    gone = [(p, "0") for p in range(100, 94, -1)]
    frames = [
        diff(101, 101, T0 + 300, bids=[*gone, (80, "2")]),
        diff(102, 102, T0 + 600, asks=[(110, "3")]),  # the interval snapshot of the state
    ]
    snaps += kernel.frames(frames, np.zeros(2, np.int64)).books.output.snapshots
    return snaps


def test_levels_beyond_the_rest_snapshot_are_marked_unknown() -> None:
    snaps = snapshots_of_a_book_losing_its_top()
    assert [(s.ts_event - T0, s.update_id, s.bids_known, s.asks_known) for s in snaps] == [
        (0, 100, True, True),  # the sync: every level shown lies in the snapshot's range
        (200, 100, True, True),  # the interval boundary before diff 101
        (600, 101, False, True),  # bids 94..91 known, then 80 with unknown levels before it
    ]
    assert snaps[2].bid_price == tuple(p * 10**8 for p in (94, 93, 92, 91, 80))
    table = book_snapshots_table(snaps, "binance")
    assert table.column("bids_complete").to_pylist() == [True, True, False]
    assert table.column("asks_complete").to_pylist() == [True, True, True]


def test_completeness_flags_round_trip_through_clickhouse(warehouse) -> None:
    import dagster as dg

    from quant_assets.schema import clickhouse_schema
    from quant_resources.migrations import load

    dg.materialize(
        [clickhouse_schema],
        partition_key=load("clickhouse")[-1].key,
        resources={"warehouse": warehouse},
    )
    warehouse.insert(
        "book_snapshots", book_snapshots_table(snapshots_of_a_book_losing_its_top(), "binance")
    )
    rows = warehouse.query_rows(
        "SELECT toUnixTimestamp64Milli(ts_event), bids_complete, asks_complete "
        "FROM book_snapshots FINAL ORDER BY ts_event"
    )
    got = [(int(ts) - T0, bool(b), bool(a)) for ts, b, a in rows]
    assert got == [(0, True, True), (200, True, True), (600, False, True)]
