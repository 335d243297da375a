"""A bulk hand-over (``ATTACH PARTITION ... FROM``, one month partition at a time) that fails on
its second partition: the first partition's new rows are removed again, nothing partial stays
visible, the older version is intact in ClickHouse and the lake, and a retry publishes.

The failure is a real server-side error: the warehouse endpoint (``quant warehouse serve``)
refuses the second partition's ``ATTACH`` through its test fault hook
(``QUANT_WAREHOUSE_REFUSE_FILE``); the unmodified clickhouse-connect client gets it over HTTP."""

from __future__ import annotations

import dataclasses
from datetime import date

import pytest

from quant_dev.processes import warehouse_endpoint
from quant_resources.lake import LakeResource
from quant_resources.migrations import ClickHouseLedger, load, migrate
from quant_resources.publications import ROLLED_BACK, STAGED
from quant_resources.store import HistoricalStore, StoreError
from quant_resources.warehouse import WarehouseResource
from quant_resources.warehouse_client import close_all_clients
from tests.test_store import LOG, bars, snapshot, target

DAYS = [date(2024, 10, 31), date(2024, 11, 1)]  # two month partitions: 202410, 202411


@pytest.fixture
def refusing(tmp_path, monkeypatch):
    """A store on an endpoint of its own, and the file that makes the endpoint refuse."""
    refuse = tmp_path / "refuse"
    monkeypatch.setenv("QUANT_WAREHOUSE_REFUSE_FILE", str(refuse))
    with warehouse_endpoint(tmp_path / "warehouse") as url:
        warehouse = WarehouseResource(url=url)
        migrations = load("clickhouse")
        migrate(ClickHouseLedger(warehouse), migrations, migrations[-1].key)
        try:
            yield (
                HistoricalStore(
                    warehouse=warehouse, lake=LakeResource(url=f"file://{tmp_path / 'lake'}")
                ),
                refuse,
            )
        finally:
            close_all_clients()


def _newest_block(store: HistoricalStore, partition: str) -> int:
    """The newest block number of any part of ``partition``, active or not: an attached part
    takes a new one, a delete (mutation) keeps its parts' numbers."""
    return store.warehouse.scalar(
        "SELECT max(max_block_number) FROM system.parts WHERE database = currentDatabase() "
        "AND table = 'bars_1m' AND partition_id = {p:String}",
        {"p": partition},
    )


def test_a_bulk_hand_over_failing_on_its_second_month_partition_leaves_the_old_version(
    refusing,
) -> None:
    store, refuse = refusing
    bulk = dataclasses.replace(target(DAYS), bulk=True)
    old = store.replace(bulk, bars(1, DAYS), holder="test", log=LOG)
    before = snapshot(store)
    blocks = {p: _newest_block(store, p) for p in ("202410", "202411")}
    assert {v for *_, v in before["rows"]} == {old.version}

    refuse.write_text(r"ATTACH PARTITION ID '202411'")
    with pytest.raises(StoreError, match="fault injected") as failed:
        store.replace(bulk, bars(2, DAYS), holder="test", log=LOG)
    assert failed.value.metadata["state"] == STAGED
    # The first month partition was handed over (a new block), the second refused.
    assert _newest_block(store, "202410") > blocks["202410"]
    assert _newest_block(store, "202411") == blocks["202411"]
    assert snapshot(store) == before  # every stored row of every version, every lake file
    assert (
        store.warehouse.query_rows(
            "SELECT name FROM system.tables WHERE database = currentDatabase() "
            "AND startsWith(name, '_stage_')"
        )
        == []
    )

    refuse.unlink()
    new = store.replace(bulk, bars(2, DAYS), holder="test", log=LOG)
    after = snapshot(store)
    assert {v for *_, v in after["rows"]} == {new.version}
    expected = bars(2, DAYS)
    assert len(after["rows"]) == expected.num_rows
    assert sorted(c for *_, c, _ in after["rows"]) == sorted(expected.column("close").to_pylist())
    assert after["lake"] != before["lake"] and len(after["lake"]) == len(DAYS)
    # The failed version was recorded as staged; the retry's repair closes it as rolled back.
    failed_version = failed.value.metadata["version"]
    assert len(new.repaired) == 1 and f"version {failed_version} " in new.repaired[0]
    assert "fault injected" in new.repaired[0]
    states = store.warehouse.query_rows(
        "SELECT DISTINCT state FROM slice_publications WHERE version = {v:UInt64}",
        {"v": failed_version},
    )
    assert {s for (s,) in states} == {ROLLED_BACK}
