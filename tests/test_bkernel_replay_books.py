"""The Dagster ``replay_verification`` asset compares a session's book snapshots with ClickHouse
too (issue 16: "replay verify --against-warehouse compares book_snapshots"), by the same
function as the CLI: green when ClickHouse holds exactly the replayed snapshots, red naming the
first difference otherwise. The session is the one the live driver writes in
``test_bkernel_books_drivers`` (two symbols with depth, faults, trades)."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa
import pytest

from quant_assets.replay import replay_sessions, replay_verification
from quant_assets.schema import clickhouse_schema
from quant_core.replay import replay
from quant_resources.lake import LakeResource
from quant_resources.migrations import load
from tests.test_bkernel_books_drivers import run_live


@pytest.fixture
def setup(warehouse, tmp_path):
    _, session, _ = run_live(tmp_path)
    lake = LakeResource(url=f"file://{tmp_path / 'lake'}")
    for path in sorted(session.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            lake.write_bytes(f"sessions/{session.name}/{path.name}", path.read_bytes())
    dg.materialize(
        [clickhouse_schema],
        partition_key=load("clickhouse")[-1].key,
        resources={"warehouse": warehouse},
    )
    result = replay(session)
    warehouse.insert("bars_1m", result.bars)
    warehouse.insert("book_updates", result.book_updates)  # books2: compared too
    assert result.book_snapshots.num_rows > 10
    return warehouse, lake, session.name, result.book_snapshots


def verify(warehouse, lake, session_id: str) -> tuple[dict[str, bool], dict]:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(replay_sessions.name, [session_id])
    result = dg.materialize(
        [replay_verification],
        partition_key=session_id,
        instance=instance,
        resources={"warehouse": warehouse, "lake": lake},
        raise_on_error=False,
    )
    checks, meta = {}, {}
    for e in result.all_events:
        if e.event_type_value == "ASSET_CHECK_EVALUATION":
            data = e.event_specific_data
            checks[data.asset_check_key.name] = data.passed
            meta[data.asset_check_key.name] = {k: v.value for k, v in data.metadata.items()}
    return checks, meta


def test_stored_book_snapshots_equal_to_the_replay_are_green(setup) -> None:
    warehouse, lake, session_id, snapshots = setup
    warehouse.insert("book_snapshots", snapshots)
    checks, meta = verify(warehouse, lake, session_id)
    assert checks == {
        "chain_intact": True,
        "bars_match_warehouse": True,
        "book_snapshots_match_warehouse": True,
    }
    assert meta["book_snapshots_match_warehouse"]["book_snapshots"] == snapshots.num_rows


def test_a_changed_or_missing_book_snapshot_is_red(setup) -> None:
    warehouse, lake, session_id, snapshots = setup
    # One level quantity of one snapshot differs, and the last snapshot is missing.
    rows = snapshots.slice(0, snapshots.num_rows - 1).to_pylist()
    rows[3]["bid_qtys"] = [q + 1 for q in rows[3]["bid_qtys"]]
    warehouse.insert("book_snapshots", pa.Table.from_pylist(rows, schema=snapshots.schema))
    checks, meta = verify(warehouse, lake, session_id)
    assert checks["bars_match_warehouse"] is True
    assert checks["book_snapshots_match_warehouse"] is False
    assert "book snapshot" in meta["book_snapshots_match_warehouse"]["first_difference"]
