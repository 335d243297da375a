"""Replay reproduces ``book_updates`` whole, the receive time ``ts_init`` included (issue 16):
the session reader hands the recorded receive time of every record to the replay driver, so
the books' rows get the times the live driver gave them. The live driver is fed the mixed
depth stream of ``test_bkernel_books_drivers`` (gaps, stale and refused snapshots, a
reconnect); each row's receive time is its frame's (a row applied from the buffer when a REST
answer synced a book takes the answer's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quant_core.book_tables import BOOK_UPDATES, book_updates_table, compare_book_updates
from quant_core.replay import replay
from quant_core.sessionlog.reader import SessionReader, unverified_records
from tests.test_bkernel_books_drivers import run_live


def live_book_updates(outputs) -> pa.Table:
    """The ``book_updates`` rows the live sinks got."""
    tables = [BOOK_UPDATES.empty_table()]
    for out in outputs:
        if out.books is None or not len(out.books.output.updates["price"]):
            continue
        b = out.books.output
        tables.append(book_updates_table(b.symbols, b.updates, out.books.ts_init, "binance"))
    return pa.concat_tables(tables)


def test_replay_gives_book_updates_with_the_live_receive_times(tmp_path: Path) -> None:
    outputs, session, _ = run_live(tmp_path)
    expected = live_book_updates(outputs)
    assert expected.num_rows > 100
    times = pc.cast(expected.column("ts_init"), pa.int64()).to_numpy()
    assert (times > 0).all() and len(np.unique(times)) > 10

    serial = replay(session, parallel=False).book_updates
    assert serial.equals(expected)  # same rows, same order, every column
    assert replay(session, parallel=True).book_updates.equals(expected)  # unverified reader
    paced = replay(session, speed=1e9, sleep=lambda s: None).book_updates  # record by record
    assert paced.equals(expected)
    assert compare_book_updates(expected, serial) is None


def test_batches_carry_each_records_receive_time(tmp_path: Path) -> None:
    _, session, _ = run_live(tmp_path)
    recorded = [(r.kind, r.payload, r.recv_ns) for r in SessionReader(session).records()]
    for items in (
        SessionReader(session).batches(7, times=True),
        unverified_records(SessionReader(session).files, 7, times=True),
    ):
        flat = [
            (kind, payload, recv)
            for kind, _, payloads, recvs in items
            for payload, recv in zip(payloads, recvs, strict=True)
        ]
        assert flat == recorded
    assert all(len(item) == 3 for item in SessionReader(session).batches(7))  # as before


def test_a_different_receive_time_is_named(tmp_path: Path) -> None:
    outputs, _, _ = run_live(tmp_path)
    expected = live_book_updates(outputs)
    times = pc.cast(expected.column("ts_init"), pa.int64()).to_numpy().copy()
    times[5] += 1
    changed = expected.set_column(
        expected.schema.get_field_index("ts_init"),
        "ts_init",
        pa.array(times).cast(BOOK_UPDATES.field("ts_init").type),
    )
    found = compare_book_updates(expected, changed)
    assert found is not None and "ts_init" in found, found
    assert "is expected but missing" in compare_book_updates(expected, changed.slice(1))
    # A crashed session's store may lack rows of its log, never differ in one.
    assert compare_book_updates(expected, expected.slice(1), subset=True) is None
    assert "ts_init" in compare_book_updates(expected, changed.slice(1), subset=True)
