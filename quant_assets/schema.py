"""Schema migrations as partitioned assets (group ``schema``).

Each partition is one migration file. Materialising a partition applies that migration and
every earlier one not yet applied, records them in the ledger, and is a no-op when the database
is already there. Every data asset depends on these assets (all partitions).
"""

import dagster as dg

from quant_assets.partitions import (
    clickhouse_migration_partitions,
    clickhouse_migrations,
    postgres_migration_partitions,
    postgres_migrations,
)
from quant_core.migrations import Migration, MigrationError, plan
from quant_resources.migrations import ClickHouseLedger, Ledger, PostgresLedger, migrate
from quant_resources.postgres import PostgresResource
from quant_resources.warehouse import WarehouseResource


def _materialize(
    context: dg.AssetExecutionContext, ledger: Ledger, migrations: list[Migration], where: str
) -> dg.MaterializeResult:
    target = context.partition_key
    report = migrate(ledger, migrations, target)
    if report.applied:
        context.log.info(f"applied {', '.join(report.applied)} to {where}")
    else:
        context.log.info(f"{where} already at {target}: nothing to do")
    migration = next(m for m in migrations if m.key == target)
    _record_earlier(context, migrations, target)
    return dg.MaterializeResult(
        metadata={
            "target": target,
            "applied_now": dg.MetadataValue.json(report.applied),
            "already_applied": dg.MetadataValue.json(report.already),
            "checksum": migration.checksum,
            "statements": len(migration.statements),
            "duration_s": round(report.seconds, 3),
            "database": where,
            "sql": dg.MetadataValue.md(f"```sql\n{migration.sql.strip()}\n```"),
        },
        data_version=dg.DataVersion(migration.checksum),
    )


def _record_earlier(
    context: dg.AssetExecutionContext, migrations: list[Migration], target: str
) -> None:
    """Applying a partition applies every earlier migration too: each of those partitions gets
    its own materialisation, so the UI counts every migration in the database as materialised
    (not "1 of 7"). Partitions Dagster already knows as materialised are left alone."""
    done = context.instance.get_materialized_partitions(context.asset_key)
    keys = [m.key for m in migrations]
    for migration in migrations[: keys.index(target)]:
        if migration.key in done:
            continue
        context.log_event(
            dg.AssetMaterialization(
                asset_key=context.asset_key,
                partition=migration.key,
                description=f"applied with (or before) {target}",
                metadata={
                    "checksum": migration.checksum,
                    "statements": len(migration.statements),
                    "applied_with": target,
                },
            )
        )


@dg.asset(
    group_name="schema",
    partitions_def=clickhouse_migration_partitions,
    kinds={"clickhouse", "sql"},
    description="ClickHouse tables (bars_1m, trades, quotes, options_quotes, fills, actions, "
    "telemetry); one partition per file in migrations/clickhouse.",
)
def clickhouse_schema(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    return _materialize(
        context, ClickHouseLedger(warehouse), clickhouse_migrations, warehouse.display_url
    )


@dg.asset(
    group_name="schema",
    partitions_def=postgres_migration_partitions,
    kinds={"postgres", "sql"},
    description="PostgreSQL platform tables (users, strategies, artifacts, deployments); one "
    "partition per file in migrations/postgres. Needs a PostgreSQL server (POSTGRES_URL): the "
    "embedded default (`make demo`, `make dev`) runs none, so there this asset stays "
    "unmaterialised and a materialisation fails naming the missing variable.",
)
def postgres_schema(
    context: dg.AssetExecutionContext, postgres: PostgresResource
) -> dg.MaterializeResult:
    return _materialize(
        context, PostgresLedger(postgres), postgres_migrations, postgres.display_url
    )


def _ledger_check(ledger: Ledger, migrations: list[Migration]) -> dg.AssetCheckResult:
    applied = ledger.applied()
    try:
        plan(migrations, migrations[-1].key, applied)
    except MigrationError as exc:
        return dg.AssetCheckResult(passed=False, metadata={"error": str(exc)})
    pending = [m.key for m in migrations if m.key not in applied]
    return dg.AssetCheckResult(
        passed=True,
        metadata={"applied": len(applied), "pending": dg.MetadataValue.json(pending)},
    )


@dg.asset_check(asset=clickhouse_schema, blocking=True, description="Ledger checksums match files.")
def clickhouse_ledger_matches_files(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    return _ledger_check(ClickHouseLedger(warehouse), clickhouse_migrations)


@dg.asset_check(asset=postgres_schema, blocking=True, description="Ledger checksums match files.")
def postgres_ledger_matches_files(postgres: PostgresResource) -> dg.AssetCheckResult:
    return _ledger_check(PostgresLedger(postgres), postgres_migrations)


schema_assets = [clickhouse_schema, postgres_schema]
schema_checks = [clickhouse_ledger_matches_files, postgres_ledger_matches_files]
