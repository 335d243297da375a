"""Applying migrations and keeping their ledger, in ClickHouse and in PostgreSQL."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from quant_core.migrations import Migration, ordered, parse, plan, render
from quant_resources.settings import clickhouse_cluster, migrations_dir

MIGRATIONS_ROOT = Path(migrations_dir() or Path(__file__).resolve().parents[1] / "migrations")


def load(kind: str) -> list[Migration]:
    """All migrations of ``kind`` (``clickhouse`` or ``postgres``), in order."""
    folder = MIGRATIONS_ROOT / kind
    return ordered([parse(p.name, p.read_text()) for p in sorted(folder.glob("*.sql"))])


class Ledger(Protocol):
    def applied(self) -> dict[str, str]: ...

    def apply(self, migration: Migration) -> float: ...


@dataclass
class MigrationReport:
    target: str
    applied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    seconds: float = 0.0


def migrate(ledger: Ledger, migrations: list[Migration], target: str) -> MigrationReport:
    """Bring the database up to ``target``; a no-op when it is already there."""
    recorded = ledger.applied()
    todo = plan(migrations, target, recorded)
    report = MigrationReport(target=target)
    report.already = [m.key for m in migrations if m.key in recorded and m.number <= _num(target)]
    for migration in todo:
        report.seconds += ledger.apply(migration)
        report.applied.append(migration.key)
    return report


def _num(key: str) -> int:
    return int(key.split("_", 1)[0])


class ClickHouseLedger:
    """Ledger table ``schema_migrations`` in the warehouse database. ClickHouse has no
    transactional DDL, so migrations are written idempotently (IF NOT EXISTS) and the ledger row
    is written only after every statement succeeded.

    With ``QUANT_CLICKHOUSE_CLUSTER`` set, every statement (the ledger table's too) is rendered
    for that cluster (:func:`quant_core.migrations.render`), the warehouse database is created
    on every node first, and the ledger still records the checksum of the file text."""

    def __init__(self, warehouse) -> None:
        self.warehouse = warehouse
        self.cluster = clickhouse_cluster()
        if self.cluster:
            # The resource created the database on the node it talks to; DDL ON CLUSTER needs
            # it on every node.
            warehouse.command(
                render(f"CREATE DATABASE IF NOT EXISTS {warehouse.database}", self.cluster)
            )
        warehouse.command(
            render(
                "CREATE TABLE IF NOT EXISTS schema_migrations (id String, filename String, "
                "checksum String, applied_at DateTime64(3, 'UTC'), duration_ms UInt64) "
                "ENGINE = ReplacingMergeTree ORDER BY id",
                self.cluster,
            )
        )

    def applied(self) -> dict[str, str]:
        rows = self.warehouse.query_rows("SELECT id, checksum FROM schema_migrations FINAL")
        return dict(rows)

    def apply(self, migration: Migration) -> float:
        start = time.perf_counter()
        for statement in migration.statements:
            self.warehouse.command(render(statement, self.cluster))
        seconds = time.perf_counter() - start
        self.warehouse.command(
            "INSERT INTO schema_migrations VALUES ({id:String}, {f:String}, {c:String}, "
            "now64(3), {ms:UInt64})",
            {
                "id": migration.key,
                "f": migration.filename,
                "c": migration.checksum,
                "ms": int(seconds * 1000),
            },
        )
        return seconds


class PostgresLedger:
    """Ledger table ``schema_migrations``; each migration and its ledger row commit together."""

    def __init__(self, postgres) -> None:
        self.postgres = postgres
        postgres.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, filename TEXT NOT "
            "NULL, checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
            "duration_ms BIGINT NOT NULL)"
        )

    def applied(self) -> dict[str, str]:
        return dict(self.postgres.fetch_all("SELECT id, checksum FROM schema_migrations"))

    def apply(self, migration: Migration) -> float:
        start = time.perf_counter()
        with self.postgres.connect() as conn, conn.transaction():
            conn.execute(migration.sql)
            seconds = time.perf_counter() - start
            conn.execute(
                "INSERT INTO schema_migrations (id, filename, checksum, duration_ms) "
                "VALUES (%s, %s, %s, %s)",
                (migration.key, migration.filename, migration.checksum, int(seconds * 1000)),
            )
        return seconds
