"""The order-book tables (``book_updates``, ``book_snapshots``, ``book_resyncs``) as Arrow, built
from what ``depth_sync.DepthBooks`` emits; the live job and replay build them here alike, so a
replayed session compares row for row with what the live job stored."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quant_core.depth_sync import BookSnapshot, Resync
from quant_core.tables import PRICE, TS, decimal_from_scaled

TS_NS = pa.timestamp("ns", tz="UTC")
SIDES = ("bid", "ask")
LEVELS = pa.list_(PRICE)
SNAPSHOT_COLUMNS = (
    "bid_prices", "bid_qtys", "ask_prices", "ask_qtys",
)  # fmt: skip
BOOK_SNAPSHOTS = pa.schema(
    [
        ("source", pa.string()),
        ("symbol", pa.string()),
        ("ts_event", TS),
        ("update_id", pa.uint64()),
        *[(name, LEVELS) for name in SNAPSHOT_COLUMNS],
        ("synced_from", pa.uint64()),
        ("bids_complete", pa.bool_()),  # bkernel: migration 0011, "levels beyond are unknown"
        ("asks_complete", pa.bool_()),  # bkernel
    ]
)
COMPLETENESS_COLUMNS = ("bids_complete", "asks_complete")  # bkernel
BOOK_UPDATES = pa.schema(
    [
        ("source", pa.string()),
        ("symbol", pa.string()),
        ("first_update_id", pa.uint64()),
        ("last_update_id", pa.uint64()),
        ("ts_event", TS),
        ("ts_init", TS_NS),
        ("side", pa.string()),
        ("price", PRICE),
        ("qty", PRICE),
    ]
)


def repeated(text: str, n: int) -> pa.Array:
    """A string column of ``n`` times ``text``, built in Arrow (no list of n strings)."""
    return pa.repeat(pa.scalar(text, pa.string()), n)


def book_updates_table(
    symbols: Sequence[str], cols: dict[str, np.ndarray], ts_init_ns: np.ndarray, source: str
) -> pa.Table:
    """``DepthBooks`` update columns (``BookOutput.updates``, symbol codes into ``symbols``)
    with each row's receive time in ns."""
    n = len(cols["price"])
    return pa.table(
        {
            "source": repeated(source, n),
            "symbol": pa.array(list(symbols), pa.string()).take(pa.array(cols["symbol"])),
            "first_update_id": pa.array(cols["first_update_id"], pa.uint64()),
            "last_update_id": pa.array(cols["last_update_id"], pa.uint64()),
            "ts_event": pa.array(cols["ts_event"], pa.int64()).cast(TS),
            "ts_init": pa.array(np.asarray(ts_init_ns, dtype=np.int64), pa.int64()).cast(TS_NS),
            "side": pa.array(SIDES, pa.string()).take(pa.array(cols["side"].astype(np.int32))),
            "price": decimal_from_scaled(cols["price"], 8),
            "qty": decimal_from_scaled(cols["qty"], 8),
        },
        schema=BOOK_UPDATES,
    )


def _levels(rows: list[tuple[int, ...]]) -> pa.Array:
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    flat = np.fromiter(chain.from_iterable(rows), np.int64, int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), decimal_from_scaled(flat, 8))


def book_snapshots_table(snapshots: Sequence[BookSnapshot], source: str) -> pa.Table:
    """``book_snapshots`` rows, in the order given."""
    n = len(snapshots)
    return pa.table(
        [
            repeated(source, n),
            pa.array([s.symbol for s in snapshots], pa.string()),
            pa.array([s.ts_event for s in snapshots], pa.int64()).cast(TS),
            pa.array([s.update_id for s in snapshots], pa.uint64()),
            _levels([s.bid_price for s in snapshots]),
            _levels([s.bid_qty for s in snapshots]),
            _levels([s.ask_price for s in snapshots]),
            _levels([s.ask_qty for s in snapshots]),
            pa.array([s.synced_from for s in snapshots], pa.uint64()),
            pa.array([s.bids_known for s in snapshots], pa.bool_()),  # bkernel
            pa.array([s.asks_known for s in snapshots], pa.bool_()),  # bkernel
        ],
        schema=BOOK_SNAPSHOTS,
    )


def book_resyncs_table(
    resyncs: Sequence[Resync], recv_ms: int, session_id: str, source: str
) -> pa.Table:
    """``book_resyncs`` rows: ``ts`` is the exchange time of the last diff the book saw, else
    ``recv_ms`` (the receive time of the input that caused the record); ids 0 when none."""
    n = len(resyncs)
    return pa.table(
        {
            "source": repeated(source, n),
            "symbol": pa.array([r.symbol for r in resyncs], pa.string()),
            "ts": pa.array(
                [recv_ms if r.ts_event is None else r.ts_event for r in resyncs], pa.int64()
            ).cast(TS),
            "reason": pa.array([r.reason for r in resyncs], pa.string()),
            "update_id": pa.array([r.update_id or 0 for r in resyncs], pa.uint64()),
            "next_update_id": pa.array([r.next_update_id or 0 for r in resyncs], pa.uint64()),
            "detail": pa.array([r.detail for r in resyncs], pa.string()),
            "session_id": repeated(session_id, n),
        }
    )


def compare_book_snapshots(expected: pa.Table, actual: pa.Table) -> str | None:
    """The first differing book snapshot as a sentence, or None when both hold the same ones
    (matched on source, symbol, ts_event and update_id; levels, synced_from and the
    completeness flags compared)."""
    exp, act = _snapshot_rows(expected), _snapshot_rows(actual)
    for key in sorted(exp.keys() | act.keys()):
        source, symbol, ts, update_id = key
        name = f"book snapshot {symbol} {ts.isoformat()} update_id {update_id} (source {source})"
        if key not in act:
            return f"{name} is expected but missing"
        if key not in exp:
            return f"{name} is not expected"
        for col in (*SNAPSHOT_COLUMNS, "synced_from", *COMPLETENESS_COLUMNS):  # bkernel
            if exp[key][col] != act[key][col]:
                return f"{name}: {col} is {act[key][col]!r}, expected {exp[key][col]!r}"
    return None


def _snapshot_rows(table: pa.Table) -> dict[tuple, dict[str, Any]]:
    rows: dict[tuple, dict[str, Any]] = {}
    for row in table.select(BOOK_SNAPSHOTS.names).to_pylist():
        key = (row["source"], row["symbol"], row["ts_event"], row["update_id"])
        if key in rows and rows[key] != row:
            raise ValueError(f"book_snapshots has {key[1]} {key[2]} {key[3]} twice, differing")
        rows[key] = row
    return rows


# book_updates is a ReplacingMergeTree on this key: a row applied twice (a diff re-applied after
# a resync) is one row in the table, the one inserted last.
UPDATE_KEY = ("source", "symbol", "last_update_id", "first_update_id", "side", "price")


def latest_book_updates(table: pa.Table) -> pa.Table:
    """``book_updates`` rows in the table's key order, one per key (the last of the table's
    order, as ClickHouse keeps it): the form ``compare_book_updates`` compares."""
    table = table.select(BOOK_UPDATES.names).cast(BOOK_UPDATES)
    order = [(k, "ascending") for k in UPDATE_KEY]
    table = table.append_column("row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    table = table.sort_by([*order, ("row", "ascending")])
    if table.num_rows > 1:
        same = np.ones(table.num_rows - 1, dtype=bool)
        for key in UPDATE_KEY:
            column = table.column(key)
            same &= pc.equal(column[1:], column[:-1]).to_numpy(zero_copy_only=False)
        keep = np.append(~same, True)  # the last of each run of equal keys
        table = table.filter(pa.array(keep))
    return table.drop_columns(["row"])


def compare_book_updates(expected: pa.Table, actual: pa.Table, subset: bool = False) -> str | None:
    """The first differing ``book_updates`` row as a sentence, or None when both hold the same
    rows, every column compared (``ts_init`` included). Rows are matched on the table's key.
    ``subset``: ``actual`` may lack rows of ``expected`` (what a crashed live process had not
    stored yet), but every row it has must be equal."""
    exp, act = latest_book_updates(expected), latest_book_updates(actual)
    keys = [_keys(exp), _keys(act)]
    if subset:
        exp = exp.filter(pa.array(np.isin(keys[0], keys[1])))
        keys[0] = _keys(exp)
    if exp.num_rows != act.num_rows or not (keys[0] == keys[1]).all():
        first_exp, first_act = set(keys[0].tolist()), set(keys[1].tolist())
        missing = [i for i, k in enumerate(keys[0].tolist()) if k not in first_act]
        if missing:
            return f"{_row_name(exp, missing[0])} is expected but missing"
        extra = [i for i, k in enumerate(keys[1].tolist()) if k not in first_exp]
        return f"{_row_name(act, extra[0])} is not expected"
    for name in BOOK_UPDATES.names:
        differs = pc.not_equal(exp.column(name), act.column(name)).to_numpy(zero_copy_only=False)
        if differs.any():
            i = int(np.flatnonzero(differs)[0])
            value, wanted = act.column(name)[i].as_py(), exp.column(name)[i].as_py()
            return f"{_row_name(exp, i)}: {name} is {value!r}, expected {wanted!r}"
    return None


def _keys(table: pa.Table) -> np.ndarray:
    """Each row's key as one string (the columns joined), for matching rows."""
    parts = [pc.cast(table.column(k), pa.string()) for k in UPDATE_KEY]
    joined = pc.binary_join_element_wise(*parts, "|") if parts else pa.array([], pa.string())
    return np.asarray(joined.to_pylist(), dtype=object)


def _row_name(table: pa.Table, i: int) -> str:
    row = {k: table.column(k)[i].as_py() for k in UPDATE_KEY}
    return (
        f"book update {row['symbol']} {row['first_update_id']}..{row['last_update_id']} "
        f"{row['side']} {row['price']} (source {row['source']})"
    )
