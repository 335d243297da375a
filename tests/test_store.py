"""HistoricalStore: incomplete answers refused, concurrent replacements serialised, the two
stores published in order with a recorded state, and failures repaired by the next run."""

from __future__ import annotations

import logging
import threading
from datetime import date

import pyarrow as pa
import pytest

from quant_core.calendar import session
from quant_core.synthetic import equity_bars
from quant_resources.lake import LakeError, LakeResource
from quant_resources.migrations import ClickHouseLedger, load, migrate
from quant_resources.store import HistoricalStore, IncompleteAnswerError, Slice, StoreError
from quant_resources.warehouse import WarehouseResource
from quant_resources.warehouse_lock import LockTimeoutError, WarehouseLock, lock_name

DAYS = [date(2024, 11, 25), date(2024, 11, 26), date(2024, 11, 27), date(2024, 11, 29)]
SLICE = "source = {src:String} AND session_date IN {days:Array(Date)} AND interval = '1m'"
LOG = logging.getLogger("test_store")


@pytest.fixture
def store(warehouse, tmp_path) -> HistoricalStore:
    migrations = load("clickhouse")
    migrate(ClickHouseLedger(warehouse), migrations, migrations[-1].key)
    return HistoricalStore(
        warehouse=warehouse, lake=LakeResource(url=f"file://{tmp_path / 'lake'}")
    )


def bars(seed: int, days, symbols=("SPY", "AAPL")) -> pa.Table:
    return pa.concat_tables(
        [equity_bars(seed, s, session(d)) for s in symbols for d in days]
    ).combine_chunks()


def target(days, symbols=("SPY", "AAPL")) -> Slice:
    return Slice(
        table="bars_1m",
        dataset="bars_1m",
        source="synthetic",
        days=tuple(days),
        where=SLICE,
        params={"src": "synthetic", "days": list(days)},
        asked=tuple(symbols),
    )


def own_client(store: HistoricalStore, name: str) -> HistoricalStore:
    """The same store through a client of its own, as another process would have:
    clickhouse-connect allows one query at a time per client (session)."""
    url = f"{store.warehouse.url}?client_name={name}"
    return HistoricalStore(warehouse=WarehouseResource(url=url), lake=store.lake)


def replace(store, days, data, **kwargs):
    return store.replace(target(days), data, holder=kwargs.pop("holder", "test"), log=LOG, **kwargs)


def snapshot(store: HistoricalStore) -> dict:
    """Every stored row (ClickHouse, all versions) and every lake file, comparable."""
    rows = store.warehouse.query_rows(
        "SELECT session_date, symbol, ts, close, version FROM bars_1m ORDER BY ALL"
    )
    lake = {k: store.lake.read_parquet(k) for k in store.lake.list("")}
    return {
        "rows": rows,
        "lake": {k: (t.num_rows, t.column("close").to_pylist()) for k, t in lake.items()},
    }


def versions(store: HistoricalStore, day: date) -> dict[int, int]:
    return dict(
        store.warehouse.query_rows(
            "SELECT version, count() FROM bars_1m WHERE session_date = {d:Date} GROUP BY version",
            {"d": day},
        )
    )


def lake_matches_clickhouse(store: HistoricalStore, day: date) -> bool:
    key = store.lake.key("bars_1m", "synthetic", day)
    lake = store.lake.read_parquet(key).select(["symbol", "ts", "close"])
    stored = store.warehouse.query_arrow(
        "SELECT symbol, ts, close FROM bars_1m FINAL WHERE session_date = {d:Date} "
        "ORDER BY symbol, ts",
        {"d": day},
    )
    ordered = lake.sort_by([("symbol", "ascending"), ("ts", "ascending")])
    return ordered.to_pylist() == stored.to_pylist()


def ledger(store: HistoricalStore) -> list[tuple]:
    return store.warehouse.query_rows(
        "SELECT session_date, version, state, error != '' FROM slice_publications FINAL "
        "ORDER BY version, session_date"
    )


def test_an_empty_answer_is_refused_naming_source_symbols_and_day(store) -> None:
    day = DAYS[0]
    replace(store, [day], bars(1, [day]))
    before = snapshot(store)
    empty = bars(1, [day]).slice(0, 0)
    with pytest.raises(IncompleteAnswerError) as refused:
        replace(store, [day], empty)
    message = str(refused.value)
    assert "synthetic answered nothing for bars_1m on 2024-11-25" in message
    assert "SPY, AAPL" in message and "allow_empty_days: ['2024-11-25']" in message
    assert snapshot(store) == before  # ClickHouse and the lake intact


def test_a_stored_symbol_missing_from_the_answer_is_refused_unless_allowed(store, caplog) -> None:
    day = DAYS[0]
    replace(store, [day], bars(1, [day]))
    before = snapshot(store)
    only_spy = bars(2, [day], symbols=("SPY",))
    with pytest.raises(IncompleteAnswerError, match=r"no bars_1m rows for AAPL on 2024-11-25"):
        replace(store, [day], only_spy)
    assert snapshot(store) == before
    with caplog.at_level(logging.WARNING, logger="test_store"):
        done = replace(store, [day], only_spy, allow_missing_symbols=["aapl"])
    assert done.overrides == ["2024-11-25: stored symbols AAPL removed (allow_missing_symbols)"]
    assert "AAPL removed" in caplog.text
    assert store.warehouse.query_rows("SELECT DISTINCT symbol FROM bars_1m") == [("SPY",)]
    done = replace(store, [day], only_spy.slice(0, 0), allow_empty_days=[day])
    assert done.overrides == ["2024-11-25: empty answer allowed (allow_empty_days)"]
    assert store.warehouse.scalar("SELECT count() FROM bars_1m") == 0
    assert store.lake.list("") == []


@pytest.mark.parametrize("warehouse", ["http"], indirect=True)
def test_two_concurrent_replacements_of_one_slice_never_lose_it(store) -> None:
    """50 rounds of two writers at once, each with a complete version of the day, watched
    by a reader: at every observation one version is complete; at the end exactly one."""
    day = DAYS[0]
    answers = [bars(1, [day]), bars(1, [day])]  # the same rows, two versions
    complete = answers[0].num_rows
    replace(store, [day], answers[0])
    observations: list[dict[int, int]] = []
    errors: list[BaseException] = []
    for _ in range(50):
        start = threading.Barrier(2)

        def write(data: pa.Table, holder: str, start=start) -> None:
            try:
                start.wait()
                replace(own_client(store, holder), [day], data, holder=holder)
            except BaseException as exc:
                errors.append(exc)

        writers = [threading.Thread(target=write, args=(answers[i], f"writer-{i}")) for i in (0, 1)]
        for thread in writers:
            thread.start()
        while any(t.is_alive() for t in writers):
            observations.append(versions(store, day))
        for thread in writers:
            thread.join()
        assert not errors, errors
        assert list(versions(store, day).values()) == [complete]
    assert observations
    assert all(max(seen.values(), default=0) == complete for seen in observations)
    assert lake_matches_clickhouse(store, day)


@pytest.mark.parametrize("warehouse", ["http"], indirect=True)
def test_overlapping_multi_day_ranges_serialise_and_both_stores_agree(store) -> None:
    ranges = [DAYS[:3], DAYS[1:]]
    for round_ in range(5):
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def write(days, seed, start=start, errors=errors) -> None:
            try:
                start.wait()
                writer = own_client(store, f"range{seed % 2}")
                replace(writer, days, bars(seed, days), holder=f"range-{seed}")
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=write, args=(days, 10 * round_ + i))
            for i, days in enumerate(ranges)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        for day in DAYS:
            assert len(versions(store, day)) == 1, (round_, day)
            assert lake_matches_clickhouse(store, day), (round_, day)


def test_a_held_lock_makes_the_second_writer_wait_then_fail_naming_the_holder(store) -> None:
    lock = WarehouseLock(
        store.warehouse,
        lock_name("bars_1m", "synthetic"),
        holder="run-abc",
        wait_seconds=0,
        lease_seconds=600,
    )
    impatient = HistoricalStore(warehouse=store.warehouse, lake=store.lake, lock_wait_seconds=0)
    with lock.hold(), pytest.raises(LockTimeoutError, match=r"held by run-abc \(pid \d+ on "):
        replace(impatient, [DAYS[0]], bars(1, [DAYS[0]]))
    assert store.warehouse.scalar("SELECT count() FROM bars_1m") == 0
    replace(impatient, [DAYS[0]], bars(1, [DAYS[0]]))  # released: free again


def test_an_expired_lock_of_a_dead_holder_is_broken_once(store) -> None:
    dead = WarehouseLock(
        store.warehouse,
        lock_name("bars_1m", "synthetic"),
        holder="crashed",
        wait_seconds=0,
        lease_seconds=0.001,
    )
    dead.acquire()  # never released: its lease runs out at once
    replace(store, [DAYS[0]], bars(1, [DAYS[0]]))
    assert list(versions(store, DAYS[0]).values()) == [bars(1, [DAYS[0]]).num_rows]
    with pytest.raises(Exception, match="was lost"):
        dead.verify()  # the crashed holder, were it alive, would notice before deleting


class FailingMove:
    """The warehouse dies in the middle of moving the stage: part of the new version has
    landed and nothing could clean it up."""

    def __init__(self, warehouse: WarehouseResource) -> None:
        self.warehouse = warehouse

    def __call__(self, stage, version) -> None:
        columns = ", ".join(self.warehouse.table_columns(stage.table))
        select = columns.replace("version", f"toUInt64({int(version)}) AS version")
        self.warehouse.command(
            f"INSERT INTO {stage.table} ({columns}) SELECT {select} FROM {stage.name} LIMIT 5"
        )
        raise ConnectionError("warehouse connection dropped mid-move")


def test_a_clickhouse_failure_after_staging_is_recorded_and_repaired(store, monkeypatch) -> None:
    day = DAYS[0]
    replace(store, [day], bars(1, [day]))
    before = snapshot(store)
    monkeypatch.setattr(WarehouseResource, "move", FailingMove(store.warehouse))
    with pytest.raises(StoreError) as failed:
        replace(store, [day], bars(2, [day]))
    monkeypatch.undo()
    assert "ClickHouse failed to take version" in str(failed.value)
    assert "warehouse connection dropped mid-move" in str(failed.value)
    assert failed.value.metadata["state"] == "staged"
    (bad,) = [v for v in versions(store, day) if v not in {r[4] for r in before["rows"]}]
    assert versions(store, day)[bad] == 5  # the leftover the run could not remove
    assert ledger(store)[-1] == (day, bad, "staged", True)
    assert snapshot(store)["lake"] == before["lake"]
    other = DAYS[1]
    done = replace(store, [other], bars(3, [other]))  # the next replacement of bars_1m
    assert len(done.repaired) == 1 and "left staged" in done.repaired[0]
    assert bad not in versions(store, day)
    assert [r for r in snapshot(store)["rows"] if r[0] == day] == before["rows"]
    assert {state for _, v, state, _ in ledger(store) if v == bad} == {"rolled_back"}


class BrokenLake(LakeResource):
    broken: bool = True

    def prepare_bytes(self, key: str, data: bytes):
        if self.broken:
            raise LakeError(f"cannot write {key!r}: disk full")
        return super().prepare_bytes(key, data)


def test_a_lake_failure_after_clickhouse_is_recorded_and_repaired(store, tmp_path) -> None:
    day, other = DAYS[0], DAYS[1]
    replace(store, [day], bars(1, [day]))
    broken = HistoricalStore(
        warehouse=store.warehouse, lake=BrokenLake(url=f"file://{tmp_path / 'lake'}")
    )
    with pytest.raises(StoreError) as failed:
        replace(broken, [day], bars(2, [day]))
    message = str(failed.value)
    assert "ClickHouse holds the new version" in message and "disk full" in message
    assert "rewrites those lake files from ClickHouse" in message
    assert failed.value.metadata["state"] == "clickhouse"
    assert not lake_matches_clickhouse(store, day)  # visible, recorded ...
    (version,) = versions(store, day)
    assert ledger(store)[-1] == (day, version, "clickhouse", True)
    done = replace(store, [other], bars(3, [other]))  # ... and repaired by the next run
    assert len(done.repaired) == 1 and "rewrote 1 lake files" in done.repaired[0]
    assert lake_matches_clickhouse(store, day) and lake_matches_clickhouse(store, other)
    assert {s for d, v, s, _ in ledger(store) if v == version} == {"complete"}


def test_publishing_costs_a_few_queries_per_run_not_per_day(store, monkeypatch) -> None:
    calls: list[str] = []
    client = store.warehouse.client
    for name in ("command", "query", "query_arrow", "insert_arrow"):
        real = getattr(client, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(client, name, counted)
    replace(store, DAYS[:1], bars(1, DAYS[:1]))  # first use: reads the table's columns
    calls.clear()
    replace(store, DAYS[:1], bars(2, DAYS[:1]))
    one_day = len(calls)
    calls.clear()
    replace(store, DAYS, bars(3, DAYS))
    assert len(calls) == one_day <= 20
