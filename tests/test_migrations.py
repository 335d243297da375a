"""Migration planning (pure) and the schema assets materialised through Dagster."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from quant_core.migrations import MigrationError, parse, plan, split_statements
from quant_resources.migrations import ClickHouseLedger, load, migrate

ROOT = Path(__file__).resolve().parents[1]


def _m(n: int, sql: str = "SELECT 1") -> object:
    return parse(f"{n:04d}_step_{n}.sql", sql)


def test_plan_applies_everything_up_to_target_in_order() -> None:
    ms = [_m(3), _m(1), _m(2)]
    assert [m.key for m in plan(ms, "0002_step_2", {})] == ["0001_step_1", "0002_step_2"]
    applied = {"0001_step_1": _m(1).checksum}
    assert [m.key for m in plan(ms, "0003_step_3", applied)] == ["0002_step_2", "0003_step_3"]
    done = {m.key: m.checksum for m in ms}
    assert plan(ms, "0003_step_3", done) == []


def test_plan_rejects_edited_applied_migration_naming_file_and_checksums() -> None:
    original, edited = _m(1, "SELECT 1"), _m(1, "SELECT 2")
    with pytest.raises(MigrationError) as info:
        plan([edited, _m(2)], "0002_step_2", {original.key: original.checksum})
    message = str(info.value)
    assert "0001_step_1.sql" in message
    assert original.checksum in message and edited.checksum in message


def test_plan_errors() -> None:
    with pytest.raises(MigrationError, match="does not exist"):
        plan([_m(1)], "0009_nope", {})
    with pytest.raises(MigrationError, match="no file"):
        plan([_m(1)], "0001_step_1", {"0002_gone": "x"})
    with pytest.raises(MigrationError, match="share a number"):
        plan([_m(1), parse("0001_other.sql", "")], "0001_step_1", {})
    with pytest.raises(MigrationError, match="NNNN_lower_snake"):
        parse("1_Bad Name.sql", "")


def test_split_statements_respects_quotes_and_comments() -> None:
    sql = "-- a; comment\nCREATE TABLE a (x String DEFAULT ';');\n/* b; */ SELECT 'it''s;' ;\n\n"
    assert split_statements(sql) == [
        "CREATE TABLE a (x String DEFAULT ';')",
        "SELECT 'it''s;'",
    ]


def test_repository_migrations_are_well_formed() -> None:
    for kind in ("clickhouse", "postgres"):
        migrations = load(kind)
        assert migrations, kind
        assert [m.number for m in migrations] == list(range(1, len(migrations) + 1))


def _materialize(partition: str, warehouse, instance=None) -> dg.ExecuteInProcessResult:
    from quant_assets.schema import clickhouse_schema

    return dg.materialize(
        [clickhouse_schema],
        partition_key=partition,
        resources={"warehouse": warehouse},
        instance=instance,
    )


def _target_meta(result: dg.ExecuteInProcessResult, partition: str) -> dict:
    (event,) = [
        m
        for m in result.asset_materializations_for_node("clickhouse_schema")
        if m.partition == partition
    ]
    return event.metadata


def test_clickhouse_schema_asset_materialises_twice_without_change(warehouse) -> None:
    migrations = load("clickhouse")
    first = _materialize(migrations[1].key, warehouse)
    assert first.success
    meta = _target_meta(first, migrations[1].key)
    assert meta["applied_now"].value == [m.key for m in migrations[:2]]
    last = migrations[-1].key
    assert _materialize(last, warehouse).success
    ledger_sql = "SELECT id, checksum, applied_at FROM schema_migrations FINAL ORDER BY id"
    ledger = warehouse.query_rows(ledger_sql)
    again = _materialize(last, warehouse)
    meta = _target_meta(again, last)
    assert meta["applied_now"].value == []
    assert warehouse.query_rows(ledger_sql) == ledger
    tables = {r[0] for r in warehouse.query_rows("SHOW TABLES")}
    assert {
        "bars_1m",
        "trades",
        "quotes",
        "options_quotes",
        "fills",
        "actions",
        "telemetry",
    } <= tables


def test_every_applied_migration_is_a_materialised_partition(warehouse) -> None:
    """Applying the last migration applies all: the UI must count all of them, not 1 of N."""
    migrations = load("clickhouse")
    with dg.instance_for_test() as instance:
        assert _materialize(migrations[-1].key, warehouse, instance).success
        key = dg.AssetKey("clickhouse_schema")
        assert instance.get_materialized_partitions(key) == {m.key for m in migrations}
        events = instance.fetch_materializations(key, limit=100).records
        assert len(events) == len(migrations)
        # Again: nothing new to record for the earlier partitions, only the target itself.
        assert _materialize(migrations[-1].key, warehouse, instance).success
        events = instance.fetch_materializations(key, limit=100).records
        assert len(events) == len(migrations) + 1


def test_edited_applied_migration_is_a_hard_error(warehouse, monkeypatch) -> None:
    import quant_assets.schema as schema

    migrations = load("clickhouse")
    migrate(ClickHouseLedger(warehouse), migrations, migrations[-1].key)
    edited = [replace(m, sql=m.sql + "\n-- edited") if m.number == 2 else m for m in migrations]
    monkeypatch.setattr(schema, "clickhouse_migrations", edited)
    result = dg.materialize(
        [schema.clickhouse_schema],
        partition_key=migrations[-1].key,
        resources={"warehouse": warehouse},
        raise_on_error=False,
    )
    assert not result.success
    error = str(result.get_step_failure_events()[0].event_specific_data.error)
    assert "0002_trades_quotes.sql" in error
    assert migrations[1].checksum in error and edited[1].checksum in error


def test_schema_assets_materialise_from_the_dagster_cli(tmp_path) -> None:
    """`dagster asset materialize` twice, as an operator would; the second run applies nothing."""
    env = {**os.environ, "QUANT_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster")}
    env.pop("CLICKHOUSE_URL", None)
    (tmp_path / "dagster").mkdir()
    last = load("clickhouse")[-1].key
    command = [
        str(Path(sys.executable).parent / "dagster"),
        "asset",
        "materialize",
        "-m",
        "quant_definitions",
        "--select",
        "clickhouse_schema",
        "--partition",
        last,
    ]
    for _ in range(2):
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr
    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster"))
    records = instance.fetch_materializations(dg.AssetKey("clickhouse_schema"), limit=100).records
    targets = [r for r in records if r.asset_materialization.partition == last]
    assert len(targets) == 2  # the earlier partitions are recorded once, by the first run
    assert len(records) == 2 + len(load("clickhouse")) - 1
    assert targets[0].asset_materialization.metadata["applied_now"].value == []
