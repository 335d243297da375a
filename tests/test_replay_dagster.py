"""Replay verification in Dagster: the sensor finds closed sessions in the lake, the asset's
checks go green for an intact session that matches ClickHouse and red otherwise."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from quant_assets.replay import replay_sessions, replay_verification
from quant_assets.schema import clickhouse_schema
from quant_resources.lake import LakeResource
from quant_resources.migrations import load
from sensors.replay import new_session_logs

GOLDEN = Path(__file__).parent / "golden"
SESSION = "golden-binance-spot-20240808"


@pytest.fixture
def setup(warehouse, tmp_path):
    lake = LakeResource(url=f"file://{tmp_path / 'lake'}")
    for path in sorted((GOLDEN / SESSION).iterdir()):
        lake.write_bytes(f"sessions/{SESSION}/{path.name}", path.read_bytes())
    dg.materialize(
        [clickhouse_schema],
        partition_key=load("clickhouse")[-1].key,
        resources={"warehouse": warehouse},
    )
    warehouse.insert("bars_1m", pq.read_table(GOLDEN / "expected_bars.parquet"))
    instance = dg.DagsterInstance.ephemeral()
    return warehouse, lake, instance


def _checks(result) -> dict[str, bool]:
    return {
        e.event_specific_data.asset_check_key.name: e.event_specific_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def _verify(setup) -> dg.ExecuteInProcessResult:
    warehouse, lake, instance = setup
    instance.add_dynamic_partitions(replay_sessions.name, [SESSION])
    return dg.materialize(
        [replay_verification],
        partition_key=SESSION,
        instance=instance,
        resources={"warehouse": warehouse, "lake": lake},
        raise_on_error=False,  # a failed blocking check fails the run; the checks are the point
    )


def test_sensor_registers_new_closed_sessions_once(setup) -> None:
    _, lake, instance = setup
    context = dg.build_sensor_context(instance=instance, resources={"lake": lake})
    result = new_session_logs(context)
    assert [r.partition_key for r in result.run_requests] == [SESSION]
    assert new_session_logs.job_name == "replay_verification_job"  # not __ephemeral_asset_job__
    (request,) = result.dynamic_partitions_requests
    assert list(request.partition_keys) == [SESSION]
    instance.add_dynamic_partitions(replay_sessions.name, [SESSION])
    again = new_session_logs(dg.build_sensor_context(instance=instance, resources={"lake": lake}))
    assert isinstance(again, dg.SkipReason)


def test_intact_session_matching_the_warehouse_is_green(setup) -> None:
    result = _verify(setup)
    assert _checks(result) == {
        "chain_intact": True,
        "bars_match_warehouse": True,
        "book_snapshots_match_warehouse": True,  # bkernel: no depth, nothing to compare
    }
    meta = result.asset_materializations_for_node("replay_verification")[0].metadata
    assert meta["bars"].value == 10 and len(meta["final_digest"].value) == 64


def test_a_changed_bar_in_the_warehouse_is_red(setup) -> None:
    warehouse = setup[0]
    bars = pq.read_table(GOLDEN / "expected_bars.parquet")
    first = bars.slice(0, 1)
    close = first.column("close")[0].as_py()
    changed = first.set_column(
        first.column_names.index("close"),
        "close",
        pa.array([close + 1], first.schema.field("close").type),
    )
    changed = changed.set_column(
        changed.column_names.index("version"), "version", pc.add(changed.column("version"), 10)
    )
    warehouse.insert("bars_1m", changed)
    checks = _checks(_verify(setup))
    assert checks == {
        "chain_intact": True,
        "bars_match_warehouse": False,
        "book_snapshots_match_warehouse": True,  # bkernel
    }


def test_a_flipped_byte_in_the_lake_is_red(setup) -> None:
    _, lake, _ = setup
    key = f"sessions/{SESSION}/seg-000002.qlog.zst"
    data = bytearray(lake.read_bytes(key))
    data[len(data) // 2] ^= 0x40
    lake.write_bytes(key, bytes(data))
    checks = _checks(_verify(setup))
    assert checks == {
        "chain_intact": False,
        "bars_match_warehouse": False,
        "book_snapshots_match_warehouse": False,  # bkernel
    }
